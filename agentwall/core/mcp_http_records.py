"""The msgspec Structs of ``agentwall.core.mcp_http``, kept uncompiled (agentwall/compiled.py)."""

from __future__ import annotations

import msgspec

Headers = list[tuple[bytes, bytes]]


class HttpReply(msgspec.Struct, frozen=True):
    """A complete answer the proxy produces itself (errors, health, 202)."""

    status: int
    body: bytes = b""
    content_type: bytes | None = b"application/json"
    headers: tuple[tuple[bytes, bytes], ...] = ()
    # Close the client connection after sending (kill mode, fatal framing).
    close: bool = False


class RequestMeta(msgspec.Struct):
    """The MCP-relevant parts of one HTTP request's head."""

    protocol_version: str | None = None
    session_id: str | None = None
    mcp_method: str | None = None
    mcp_name: str | None = None
    origin: str | None = None
    host: str | None = None
    content_type: str | None = None
    accept: str | None = None
    last_event_id: str | None = None
    authorization: str | None = None
    # A routing header given twice: first-copy and last-copy readers would
    # disagree, so the request is refused.
    duplicated: str | None = None
    # Headers to send upstream, in order, already filtered.
    forward: Headers = msgspec.field(default_factory=list)
    # Some Mcp-Param-* header is present (check_param_headers has work).
    param_headers: bool = False


class OriginPolicy(msgspec.Struct, frozen=True):
    """Which browser origins and Host authorities may reach the endpoint.

    Loopback origins are always allowed.  ``check_host`` is on when the proxy
    listens on a loopback address: a DNS-rebound page is same-origin with
    itself, so a GET from it carries no Origin, but its Host is the
    attacker's name.
    """

    allowed_origins: frozenset[str] = frozenset()
    allowed_hosts: frozenset[str] = frozenset()
    check_host: bool = True


class ParamBinding(msgspec.Struct, frozen=True):
    """One argument mirrored into one header."""

    # As the tool declared it, for messages: "Mcp-Param-Region".
    header: str
    # Lower-cased, as the request parser gives header names.
    key: bytes
    # The chain of ``properties`` keys from the schema root to the argument.
    path: tuple[str, ...]
    # The property's declared type: "string", "integer" or "boolean".
    type: str


class ToolParamHeaders(msgspec.Struct, frozen=True):
    """What a tool's inputSchema says about Mcp-Param-* headers.

    ``invalid`` names the first broken annotation: conforming clients drop
    such a tool from their list, and its annotations are not enforced (the
    proxy remembers why, to log it)."""

    bindings: tuple[ParamBinding, ...] = ()
    invalid: str | None = None


class SseEvent(msgspec.Struct):
    """One dispatched SSE event.  ``raw`` is its exact bytes including the
    terminating blank line, so an untouched event is relayed byte for byte."""

    raw: bytes
    data: bytes | None = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None


class ResponseHead(msgspec.Struct):
    status: int
    reason: bytes
    headers: Headers
    # The connection may carry another exchange after this one.
    keep_alive: bool


class BodyEnd(msgspec.Struct):
    pass


class RequestHead(msgspec.Struct):
    method: bytes
    target: bytes
    # Lower-cased names, values with surrounding whitespace removed, in order.
    headers: Headers
    http_version: bytes
    keep_alive: bool
    expect_continue: bool
    content_length: int | None
    head_size: int


class RequestEnd(msgspec.Struct):
    pass


class ConnectionEnd(msgspec.Struct):
    pass
