"""MCP over HTTP, the rules an intermediary must apply, as pure functions.

Everything here is sans-IO: it looks at header lists and decoded JSON values
and says what to do (accept, or an ``HttpReply`` to send instead).  The
asyncio shell (``agentwall.io.http_front``) owns sockets and timers; keeping
the rules here lets the tests replay them as transcripts.

Sources (modelcontextprotocol/modelcontextprotocol, docs/specification/):
``2025-06-18/basic/transports.mdx``, ``2025-11-25/basic/transports.mdx`` and
``2026-07-28/basic/transports/streamable-http.mdx``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from agentwall.core.mcp_http_records import (
    BodyEnd as BodyEnd,
)
from agentwall.core.mcp_http_records import (
    ConnectionEnd as ConnectionEnd,
)
from agentwall.core.mcp_http_records import (  # re-exported: importers use mcp_http.<Name>
    Headers as Headers,
)
from agentwall.core.mcp_http_records import (
    HttpReply as HttpReply,
)
from agentwall.core.mcp_http_records import (
    OriginPolicy as OriginPolicy,
)
from agentwall.core.mcp_http_records import (
    ParamBinding as ParamBinding,
)
from agentwall.core.mcp_http_records import (
    RequestEnd as RequestEnd,
)
from agentwall.core.mcp_http_records import (
    RequestHead as RequestHead,
)
from agentwall.core.mcp_http_records import (
    RequestMeta as RequestMeta,
)
from agentwall.core.mcp_http_records import (
    ResponseHead as ResponseHead,
)
from agentwall.core.mcp_http_records import (
    SseEvent as SseEvent,
)
from agentwall.core.mcp_http_records import (
    ToolParamHeaders as ToolParamHeaders,
)
from agentwall.core.native import choose
from agentwall.errors import (
    HEADER_MISMATCH,
    INVALID_PARAMS,
    INVALID_REQUEST,
    UNSUPPORTED_PROTOCOL_VERSION,
)

# Every released revision, oldest first.  2024-11-05 used the older HTTP+SSE
# transport, but its JSON-RPC messages are the same, so a header naming it is
# not an error.
KNOWN_PROTOCOL_VERSIONS: tuple[str, ...] = (
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
)
# Revisions with per-request metadata instead of an initialize handshake: the
# Mcp-Method/Mcp-Name headers are mandatory and must match the body.
MODERN_PROTOCOL_VERSIONS: frozenset[str] = frozenset({"2026-07-28"})
# "If the server does not receive an MCP-Protocol-Version header ... the
# server SHOULD assume protocol version 2025-03-26" (2025-11-25 transports).
DEFAULT_PROTOCOL_VERSION = "2025-03-26"
# JSON-RPC batches were MUST-receive in 2025-03-26 only (removed in 2025-06-18).
BATCH_PROTOCOL_VERSIONS: frozenset[str] = frozenset({"2024-11-05", "2025-03-26"})

PROTOCOL_VERSION_META_KEY = "io.modelcontextprotocol/protocolVersion"

# Methods whose target is mirrored in Mcp-Name, and the params key it mirrors.
NAME_BEARING_METHODS: dict[str, str] = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
}

H_PROTOCOL_VERSION = b"mcp-protocol-version"
H_SESSION_ID = b"mcp-session-id"
H_METHOD = b"mcp-method"
H_NAME = b"mcp-name"
H_PARAM_PREFIX = b"mcp-param-"
H_LAST_EVENT_ID = b"last-event-id"
H_ORIGIN = b"origin"
H_HOST = b"host"
H_CONTENT_TYPE = b"content-type"
H_ACCEPT = b"accept"
H_AUTHORIZATION = b"authorization"

_ROUTING_HEADERS = frozenset({H_PROTOCOL_VERSION, H_METHOD, H_NAME, H_SESSION_ID})

# Headers that never cross the proxy from the agent to the upstream.
#  - hop-by-hop (RFC 9110 §7.6.1) and framing: we frame our own body;
#  - host: the upstream gets its own authority;
#  - credentials: "MUST NOT pass the client's token through upstream"
#    (authorization spec); upstream credentials are the identity layer's job;
#  - origin: validated here; the upstream sees the proxy, not the browser.
_NOT_FORWARDED_UP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
        b"authorization",
        b"cookie",
        b"origin",
    }
)
# Upstream response headers that we do not relay: framing is ours.
_NOT_FORWARDED_DOWN = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"server",
        b"date",
    }
)


def rpc_error_body(rpc_id: Any, code: int, message: str, data: Any = None) -> bytes:
    """A JSON-RPC error response.  ``rpc_id`` None encodes as ``null`` (the
    spec's "error response that has no id")."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return orjson.dumps({"jsonrpc": "2.0", "id": rpc_id, "error": error})


def rpc_error_reply(
    status: int,
    code: int,
    message: str,
    *,
    rpc_id: Any = None,
    data: Any = None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    close: bool = False,
) -> HttpReply:
    return HttpReply(
        status=status,
        body=rpc_error_body(rpc_id, code, message, data),
        headers=headers,
        close=close,
    )


def plain_reply(status: int, text: str, *, close: bool = False) -> HttpReply:
    return HttpReply(
        status=status,
        body=text.encode("utf-8"),
        content_type=b"text/plain; charset=utf-8",
        close=close,
    )


# --------------------------------------------------------------------------
# Header values


class HeaderValueError(ValueError):
    pass


_SENTINEL_PREFIX = "=?base64?"
_SENTINEL_SUFFIX = "?="


def decode_header_value(value: str) -> str:
    """Undo the ``=?base64?…?=`` sentinel (2026-07-28 "Value Encoding").

    The markers are case-sensitive.  A sentinel whose payload is not valid
    Base64 of valid UTF-8 is an error, never passed through as literal text:
    two readers must never disagree on what a header says.
    """
    if (
        len(value) >= len(_SENTINEL_PREFIX) + len(_SENTINEL_SUFFIX)
        and value.startswith(_SENTINEL_PREFIX)
        and value.endswith(_SENTINEL_SUFFIX)
    ):
        payload = value[len(_SENTINEL_PREFIX) : -len(_SENTINEL_SUFFIX)]
        try:
            raw = base64.b64decode(payload.encode("ascii"), validate=True)
            text = raw.decode("utf-8")
        except (binascii.Error, UnicodeError, ValueError) as exc:
            raise HeaderValueError(f"invalid Base64 sentinel value {value!r}") from exc
        # Only the canonical form (what every encoder writes): a payload with
        # stray bits set after the last byte decodes here but is refused by
        # stricter readers, and two readers must not disagree.
        if base64.b64encode(raw).decode("ascii") != payload:
            raise HeaderValueError(f"non-canonical Base64 sentinel value {value!r}")
        return text
    return value


def encode_header_value(value: str) -> str:
    """The client-side encoding, used by tests and by the proxy when it has to
    synthesise a header."""
    safe = (
        value.isascii()
        and all(0x20 <= ord(c) <= 0x7E for c in value)
        and value == value.strip(" \t")
        and not (value.startswith(_SENTINEL_PREFIX) and value.endswith(_SENTINEL_SUFFIX))
    )
    if safe:
        return value
    return (
        _SENTINEL_PREFIX
        + base64.b64encode(value.encode("utf-8")).decode("ascii")
        + _SENTINEL_SUFFIX
    )


_VISIBLE_ASCII = bytes(range(0x21, 0x7F))


def _visible_ascii(value: bytes) -> bool:
    return bool(value) and not value.translate(None, _VISIBLE_ASCII)


# --------------------------------------------------------------------------
# Request metadata


# Headers read into RequestMeta, by the field they fill.
_META_FIELDS: dict[bytes, str] = {
    H_PROTOCOL_VERSION: "protocol_version",
    H_SESSION_ID: "session_id",
    H_METHOD: "mcp_method",
    H_NAME: "mcp_name",
    H_ORIGIN: "origin",
    H_HOST: "host",
    H_CONTENT_TYPE: "content_type",
    H_ACCEPT: "accept",
    H_LAST_EVENT_ID: "last_event_id",
    H_AUTHORIZATION: "authorization",
}


def read_request_meta(headers: Iterable[tuple[bytes, bytes]]) -> RequestMeta:
    """One pass over the request's (lower-cased name, value) pairs."""
    meta = RequestMeta()
    forward = meta.forward
    seen: set[bytes] = set()
    hop_named: set[bytes] | None = None
    for name, value in headers:
        field = _META_FIELDS.get(name)
        if field is not None:
            # A routing header given twice: first-copy and last-copy readers
            # would disagree.  Two Authorization headers: two sets of
            # credentials is a malformed request (RFC 6750).
            if (
                name in seen
                and meta.duplicated is None
                and (name in _ROUTING_HEADERS or name == H_AUTHORIZATION)
            ):
                meta.duplicated = name.decode("ascii")
            seen.add(name)
            setattr(meta, field, value.decode("latin-1"))
        elif name == b"connection":
            # Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
            if hop_named is None:
                hop_named = set()
            hop_named.update(t.strip().lower() for t in value.split(b",") if t.strip())
        elif name.startswith(H_PARAM_PREFIX):
            meta.param_headers = True
        if name not in _NOT_FORWARDED_UP:
            forward.append((name, value))
    if hop_named:
        keep = {H_PROTOCOL_VERSION, H_SESSION_ID, H_METHOD, H_NAME}
        meta.forward = [(n, v) for n, v in forward if n not in hop_named or n in keep]
    return meta


def response_headers_to_relay(
    headers: Iterable[tuple[bytes, bytes]],
) -> tuple[tuple[tuple[bytes, bytes], ...], bytes | None]:
    """The upstream's response headers the agent may see, without any
    Content-Type (the relay sets exactly one, the type the body was judged
    by), and the first Content-Type."""
    hop_named: set[bytes] | None = None
    content_type: bytes | None = None
    out: Headers = []
    for name, value in headers:
        if name == b"content-type":
            if content_type is None:
                content_type = value
            continue
        if name == b"connection":
            if hop_named is None:
                hop_named = set()
            hop_named.update(t.strip().lower() for t in value.split(b",") if t.strip())
        if name not in _NOT_FORWARDED_DOWN:
            out.append((name, value))
    if hop_named:
        out = [(n, v) for n, v in out if n not in hop_named]
    return tuple(out), content_type


# --------------------------------------------------------------------------
# Origin and Host (DNS-rebinding protection)

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def _split_host_port(authority: str) -> str:
    authority = authority.strip().lower()
    if authority.startswith("["):
        end = authority.find("]")
        return authority[: end + 1] if end != -1 else authority
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


_LOOPBACK_SEEN: dict[str, bool] = {}


def is_loopback_host(host: str) -> bool:
    """Does this Host/authority name this machine?  (Remembered: an agent
    sends the same Host on every request.)"""
    known = _LOOPBACK_SEEN.get(host)
    if known is None:
        known = _is_loopback_host(host)
        if len(_LOOPBACK_SEEN) >= 1024:
            _LOOPBACK_SEEN.clear()
        _LOOPBACK_SEEN[host] = known
    return known


def _is_loopback_host(host: str) -> bool:
    name = _split_host_port(host)
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def check_origin_and_host(meta: RequestMeta, policy: OriginPolicy) -> HttpReply | None:
    origin = meta.origin
    if origin is not None:
        lowered = origin.strip().lower()
        ok = lowered in policy.allowed_origins
        if not ok and "://" in lowered:
            scheme, _, rest = lowered.partition("://")
            ok = scheme in ("http", "https") and "/" not in rest and is_loopback_host(rest)
        if not ok:
            return rpc_error_reply(
                403, INVALID_REQUEST, f"Origin {origin!r} is not allowed (DNS rebinding protection)"
            )
    if policy.check_host:
        host = meta.host
        if host is None or not (
            is_loopback_host(host) or host.strip().lower() in policy.allowed_hosts
        ):
            return rpc_error_reply(
                403, INVALID_REQUEST, f"Host {host!r} is not allowed (DNS rebinding protection)"
            )
    return None


# --------------------------------------------------------------------------
# Per-request header rules


def mismatch(message: str, rpc_id: Any = None) -> HttpReply:
    return rpc_error_reply(400, HEADER_MISMATCH, f"Header mismatch: {message}", rpc_id=rpc_id)


def check_request_head(meta: RequestMeta, http_method: bytes) -> HttpReply | None:
    """Rules that need only the head: version, duplicates, session-id form,
    content type.  Run before reading the body."""
    if meta.duplicated is not None:
        return mismatch(f"{meta.duplicated} header given more than once")
    version = meta.protocol_version
    if version is not None and version not in KNOWN_PROTOCOL_VERSIONS:
        return rpc_error_reply(
            400,
            UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
            data={"supported": list(KNOWN_PROTOCOL_VERSIONS), "requested": version},
        )
    if meta.session_id is not None and not _visible_ascii(meta.session_id.encode("latin-1")):
        return rpc_error_reply(
            400, INVALID_REQUEST, "Mcp-Session-Id must be visible ASCII (0x21-0x7E)"
        )
    if http_method == b"POST":
        ctype = (meta.content_type or "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            return rpc_error_reply(
                415, INVALID_REQUEST, "POST body must be Content-Type: application/json"
            )
    return None


def is_modern(meta: RequestMeta) -> bool:
    return meta.protocol_version in MODERN_PROTOCOL_VERSIONS


def effective_version(meta: RequestMeta) -> str:
    return meta.protocol_version or DEFAULT_PROTOCOL_VERSION


def check_batch_allowed(meta: RequestMeta) -> HttpReply | None:
    if effective_version(meta) in BATCH_PROTOCOL_VERSIONS:
        return None
    return rpc_error_reply(
        400,
        INVALID_REQUEST,
        f"JSON-RPC batches are not part of MCP protocol version {effective_version(meta)}",
    )


def check_body_headers(
    meta: RequestMeta,
    *,
    kind: str,
    method: str | None,
    params: Any,
    rpc_id: Any,
) -> HttpReply | None:
    """Headers against the body: the 2026-07-28 "Server Validation" rules.

    With a modern version every rule is mandatory.  With an older version the
    headers are optional, but one that is present must still agree with the
    body: a header that lies is a smuggling attempt whatever the version.
    """
    modern = is_modern(meta)
    if modern and kind == "response":
        # "The client MUST NOT send JSON-RPC responses" (2026-07-28).
        return rpc_error_reply(
            400, INVALID_REQUEST, "clients must not send JSON-RPC responses in 2026-07-28"
        )
    if kind == "response":
        return None
    if modern and kind == "request":
        if meta.mcp_method is None:
            return mismatch("required Mcp-Method header is missing", rpc_id)
        body_version = None
        if isinstance(params, dict):
            meta_obj = params.get("_meta")
            if isinstance(meta_obj, dict):
                body_version = meta_obj.get(PROTOCOL_VERSION_META_KEY)
        if not isinstance(body_version, str):
            # A 2026-07-28 request without params._meta and its
            # protocolVersion is malformed: invalid params, not a header that
            # lies (conformance checks sep-2575-request-meta-invalid-*).
            return rpc_error_reply(
                400,
                INVALID_PARAMS,
                f"params._meta[{PROTOCOL_VERSION_META_KEY!r}] is required (a string) "
                f"under protocol version {meta.protocol_version}",
                rpc_id=rpc_id,
            )
        if body_version != meta.protocol_version:
            return mismatch(
                f"MCP-Protocol-Version header value {meta.protocol_version!r} does not match "
                f"the body's _meta protocolVersion {body_version!r}",
                rpc_id,
            )
    if meta.mcp_method is not None and meta.mcp_method != method:
        return mismatch(
            f"Mcp-Method header value {meta.mcp_method!r} does not match body value {method!r}",
            rpc_id,
        )
    name_key = NAME_BEARING_METHODS.get(method or "")
    if name_key is not None:
        body_name = params.get(name_key) if isinstance(params, dict) else None
        if meta.mcp_name is None:
            if modern and kind == "request":
                return mismatch("required Mcp-Name header is missing", rpc_id)
            return None
        try:
            header_name = decode_header_value(meta.mcp_name)
        except HeaderValueError as exc:
            return mismatch(str(exc), rpc_id)
        if header_name != body_name:
            return mismatch(
                f"Mcp-Name header value {header_name!r} does not match body value {body_name!r}",
                rpc_id,
            )
    elif meta.mcp_name is not None:
        return mismatch(f"Mcp-Name header is not defined for method {method!r}", rpc_id)
    return None


def check_param_headers(headers: Iterable[tuple[bytes, bytes]]) -> HttpReply | None:
    """Mcp-Param-* values must be legal header text and, when sentinel-encoded,
    decodable.  Their meaning is the upstream's (it knows the tool schema);
    "Intermediate servers that do not recognize an Mcp-Param-{Name} header
    MUST forward it", so beyond this they pass unchanged."""
    for name, value in headers:
        if name.startswith(H_PARAM_PREFIX):
            try:
                decode_header_value(value.decode("ascii"))
            except (UnicodeDecodeError, HeaderValueError):
                return mismatch(f"{name.decode('latin-1')} header value is not valid")
    return None


# --------------------------------------------------------------------------
# Mcp-Param-* headers against the arguments (2026-07-28, "Custom Headers from
# Tool Parameters")
#
# A tool's inputSchema may mark a property with ``"x-mcp-header": "Region"``;
# a client then mirrors that argument into ``Mcp-Param-Region``.  Routers and
# rate limiters may act on the header while the upstream acts on the body, so
# the two must agree: "Any server that processes the message body MUST
# validate that encoded header values ... match the corresponding values in
# the request body" (400, -32020).

X_MCP_HEADER = "x-mcp-header"
PARAM_HEADER_TYPES: frozenset[str] = frozenset({"string", "integer", "boolean"})
# Bounds on what one tool's schema may make us remember and walk.
MAX_BINDINGS_PER_TOOL = 64
# Deeper annotations are refused as invalid (each path is copied per level).
MAX_PARAM_PATH = 32
_MAX_SCHEMA_NODES = 20_000

# JSON Schema keywords whose value is a schema (or a list/map of schemas).
# Crossing any of them leaves the "statically reachable" chain: an
# annotation found below one is invalid.  ``$ref`` is never followed, and
# instance data (default, examples, const, enum) is never entered.
_SCHEMA_ONE = frozenset(
    {
        "items",
        "contains",
        "additionalItems",
        "unevaluatedItems",
        "additionalProperties",
        "unevaluatedProperties",
        "propertyNames",
        "not",
        "if",
        "then",
        "else",
        "contentSchema",
    }
)
_SCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMA_MAP = frozenset(
    {"patternProperties", "dependentSchemas", "$defs", "definitions", "dependencies"}
)


NO_PARAM_HEADERS = ToolParamHeaders()


def param_header_bindings(input_schema: Any) -> ToolParamHeaders:
    """The Mcp-Param-* headers a tool's ``inputSchema`` declares, validated
    against the 2026-07-28 "Schema Extension" constraints: a non-empty
    RFC 9110 token, unique ignoring case, on a string/integer/boolean
    property (``number`` is not allowed) reached from the root through
    ``properties`` keys only."""
    bindings: list[ParamBinding] = []
    seen: dict[bytes, str] = {}
    # (where: the path from the root through ``properties`` keys, or the
    # reason the node is not statically reachable; the schema node).  An
    # explicit stack: the walk is total on any JSON value, however deep.
    stack: list[tuple[tuple[str, ...] | str, Any]] = [((), input_schema)]
    nodes = 0
    while stack:
        where, node = stack.pop()
        if not isinstance(node, dict):
            continue
        nodes += 1
        if nodes > _MAX_SCHEMA_NODES:
            return ToolParamHeaders(invalid=f"inputSchema has more than {_MAX_SCHEMA_NODES} nodes")
        if X_MCP_HEADER in node:
            problem = _binding_problem(node, where, seen)
            if problem is not None:
                return ToolParamHeaders(invalid=problem)
            assert isinstance(where, tuple)
            token = node[X_MCP_HEADER]
            key = ("mcp-param-" + token.lower()).encode("ascii")
            seen[key] = "/".join(where)
            bindings.append(ParamBinding(f"Mcp-Param-{token}", key, where, node["type"]))
            if len(bindings) > MAX_BINDINGS_PER_TOOL:
                return ToolParamHeaders(
                    invalid=f"more than {MAX_BINDINGS_PER_TOOL} {X_MCP_HEADER} annotations"
                )
        for keyword, value in node.items():
            if keyword == "properties" and isinstance(value, dict):
                if isinstance(where, str):
                    inner: tuple[str, ...] | str = where
                elif len(where) >= MAX_PARAM_PATH:
                    inner = f"nested deeper than {MAX_PARAM_PATH} properties"
                else:
                    inner = where
                for name, sub in value.items():
                    stack.append((inner if isinstance(inner, str) else (*inner, name), sub))
            elif keyword in _SCHEMA_ONE or keyword in _SCHEMA_LIST or keyword in _SCHEMA_MAP:
                off = f"under {keyword!r}, outside a chain of properties keys"
                if keyword in _SCHEMA_ONE:
                    stack.append((off, value))
                elif isinstance(value, list) and keyword in _SCHEMA_LIST:
                    stack.extend((off, sub) for sub in value)
                elif isinstance(value, dict) and keyword in _SCHEMA_MAP:
                    stack.extend((off, sub) for sub in value.values())
    # Sorted by header: the order a tools/list happened to use must not
    # change which disagreement a refusal names.
    bindings.sort(key=lambda b: b.key)
    return ToolParamHeaders(bindings=tuple(bindings))


def _binding_problem(
    node: dict[str, Any], where: tuple[str, ...] | str, seen: dict[bytes, str]
) -> str | None:
    token = node[X_MCP_HEADER]
    if isinstance(where, str):
        return f"{X_MCP_HEADER} {where} ($ref is not followed either)"
    if not where:
        return f"{X_MCP_HEADER} on the schema root, not on a property"
    at = "/".join(where)
    if not isinstance(token, str):
        return f"property {at!r}: {X_MCP_HEADER} must be a string"
    if not token or not token.isascii() or token.encode("ascii").translate(None, _TOKEN_BYTES):
        return f"property {at!r}: {X_MCP_HEADER} {token[:64]!r} is not an HTTP token"
    declared = node.get("type")
    if not isinstance(declared, str) or declared not in PARAM_HEADER_TYPES:
        return (
            f"property {at!r}: {X_MCP_HEADER} is allowed on string, integer and boolean "
            f"properties only (type is {str(declared)[:32]!r})"
        )
    key = ("mcp-param-" + token.lower()).encode("ascii")
    if key in seen:
        return f"property {at!r}: {X_MCP_HEADER} {token!r} repeats that of {seen[key]!r}"
    return None


def tools_param_headers(result: Any) -> dict[str, ToolParamHeaders]:
    """tools/list result -> tool name -> its Mcp-Param-* bindings (tools that
    declare none are listed too: a later list without annotations must
    replace an earlier one with them)."""
    out: dict[str, ToolParamHeaders] = {}
    tools = result.get("tools") if isinstance(result, dict) else None
    if not isinstance(tools, list):
        return out
    for tool in tools:
        if isinstance(tool, dict) and isinstance(tool.get("name"), str):
            out[tool["name"]] = param_header_bindings(tool.get("inputSchema"))
    return out


_MISSING = object()


def _argument_at(arguments: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path``; ``_MISSING`` when a step is absent or not an
    object (the spec's "no value is present at that path")."""
    node = arguments
    for key in path:
        if not isinstance(node, dict):
            return _MISSING
        node = node.get(key, _MISSING)
        if node is _MISSING:
            return _MISSING
    return node


def _header_text(value: Any) -> str | None:
    """An argument as a conforming client writes it into its header (before
    the sentinel encoding); None when it has no header form."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int or type(value) is str:
        return str(value)
    if type(value) is float:
        return repr(value)
    return None


def _decimal_parts(text: str) -> tuple[str, str] | None:
    """("-42", "000") for "-42.000": a plain decimal, no exponent, no "+"."""
    whole, dot, fraction = text.partition(".")
    digits = whole[1:] if whole.startswith("-") else whole
    if not digits.isdigit() or not digits.isascii():
        return None
    if dot and (not fraction.isdigit() or not fraction.isascii()):
        return None
    return whole, fraction


def _agrees(binding: ParamBinding, value: Any, text: str, decoded: str) -> bool:
    if decoded == text:
        return True
    parts = _decimal_parts(decoded)
    if parts is None or len(decoded) > 400:
        return False
    # "When validating integer parameter values, servers SHOULD compare the
    # header value and the body value numerically" (42.0 equals 42).
    if binding.type == "integer" and (
        type(value) is int or (type(value) is float and value.is_integer())
    ):
        return not parts[1].strip("0") and int(parts[0]) == int(value)
    # A float (numbers are not allowed in these headers, but a client in
    # another language may write 1.0 as "1"): equal only when exact.
    if type(value) is float:
        return float(decoded) == value
    return False


def check_param_headers_against(
    tool: ToolParamHeaders,
    headers: Iterable[tuple[bytes, bytes]],
    arguments: Any,
    *,
    rpc_id: Any = None,
) -> HttpReply | None:
    """A 2026-07-28 tools/call's Mcp-Param-* headers against its arguments.

    For each declared binding: an argument that is present (and not null)
    needs its header, equal after ``=?base64?…?=`` decoding (integers
    compared as numbers, booleans as true/false); an absent or null argument
    must have no header.  A declared header given twice is refused (readers
    of the first and the last copy would disagree).  Undeclared Mcp-Param-*
    headers are not ours to judge: "Intermediate servers that do not
    recognize an Mcp-Param-{Name} header MUST forward it".
    """
    if not tool.bindings:
        return None
    wanted = {b.key: b for b in tool.bindings}
    given: dict[bytes, bytes] = {}
    # Not "value": the loop below binds that name to any JSON value, and
    # compiled code (agentwall.compiled) holds a name to its first type.
    for name, header in headers:
        if name in wanted:
            if name in given:
                return mismatch(f"{wanted[name].header} header given more than once", rpc_id)
            given[name] = header
    for binding in tool.bindings:
        raw = given.get(binding.key)
        value = _argument_at(arguments, binding.path)
        argument = ".".join(binding.path)
        if value is _MISSING or value is None:
            if raw is not None:
                return mismatch(
                    f"{binding.header} header is present but argument {argument!r} is "
                    f"{'null' if value is None else 'absent'} in the body",
                    rpc_id,
                )
            continue
        text = _header_text(value)
        if text is None:
            # An object or array has no header form: a conforming client
            # sends none, so one that is sent cannot describe the body.
            if raw is not None:
                return mismatch(
                    f"{binding.header} header cannot describe argument {argument!r} "
                    f"(a {type(value).__name__} in the body)",
                    rpc_id,
                )
            continue
        if raw is None:
            return mismatch(
                f"{binding.header} header is missing but argument {argument!r} is present "
                "in the body",
                rpc_id,
            )
        try:
            decoded = decode_header_value(raw.decode("ascii"))
        except (UnicodeDecodeError, HeaderValueError):
            return mismatch(f"{binding.header} header value is not valid", rpc_id)
        if not _agrees(binding, value, text, decoded):
            return mismatch(
                f"{binding.header} header value {decoded[:128]!r} does not match "
                f"argument {argument!r} in the body",
                rpc_id,
            )
    return None


def rebuild_param_headers(
    tool: ToolParamHeaders | None, headers: Sequence[tuple[bytes, bytes]], arguments: Any
) -> Headers:
    """The headers to forward once the arguments were changed (a redaction):
    each declared Mcp-Param-* header rebuilt from the new ``arguments``, as a
    conforming client would write it, so that the upstream never receives a
    mirror of a value the body no longer holds.  ``tool`` None (the
    declarations are unknown): every Mcp-Param-* header is dropped, since any
    of them might mirror a redacted value."""
    if tool is None:
        return [(n, v) for n, v in headers if not n.startswith(H_PARAM_PREFIX)]
    declared = {b.key for b in tool.bindings}
    out = [(n, v) for n, v in headers if n not in declared]
    for binding in tool.bindings:
        value = _argument_at(arguments, binding.path)
        text = None if value is None else _header_text(value)
        if text is not None:
            out.append((binding.key, encode_header_value(text).encode("ascii")))
    return out


# --------------------------------------------------------------------------
# Server-sent events


class SseError(ValueError):
    pass


class SseParser:
    """Cut a ``text/event-stream`` body into events as bytes arrive.

    Lines end in CRLF, LF or CR (WHATWG "event stream interpretation"); an
    event is complete at a blank line.  Nothing is held back beyond the
    incomplete tail, so relaying stays event by event.
    """

    __slots__ = ("_buf", "_event_start", "_line_start", "_lines", "_max")

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._max = max_event_bytes
        self._event_start = 0
        self._line_start = 0
        self._lines: list[bytes] = []

    def feed(self, chunk: bytes) -> list[SseEvent]:
        buf = self._buf
        buf += chunk
        events: list[SseEvent] = []
        pos = self._line_start
        n = len(buf)
        while pos < n:
            i_lf = buf.find(b"\n", pos)
            i_cr = buf.find(b"\r", pos, i_lf if i_lf != -1 else n)
            if i_cr != -1:
                if i_cr + 1 >= n:
                    break  # a CR at the very end may be half of a CRLF
                i = i_cr
                end = i + 2 if buf[i + 1] == 0x0A else i + 1
            elif i_lf != -1:
                i = i_lf
                end = i + 1
            else:
                break
            if i == pos:
                raw = bytes(buf[self._event_start : end])
                events.append(_parse_event(raw, self._lines))
                self._lines = []
                self._event_start = end
            else:
                self._lines.append(bytes(buf[pos:i]))
            pos = end
        if self._event_start:
            del buf[: self._event_start]
            pos -= self._event_start
            self._event_start = 0
        self._line_start = pos
        if len(buf) > self._max:
            raise SseError(f"SSE event larger than {self._max} bytes")
        return events

    def close(self) -> list[SseEvent]:
        """End of stream: a CR held back as a possible half of CRLF is a line
        end after all.  An unterminated last event is dropped (WHATWG)."""
        if self._buf.endswith(b"\r"):
            return self._finish_cr()
        return []

    def _finish_cr(self) -> list[SseEvent]:
        # Replace the trailing CR by LF: same line end, no longer ambiguous.
        self._buf[-1:] = b"\n"
        return self.feed(b"")

    @property
    def pending(self) -> int:
        return len(self._buf)


def _parse_event(raw: bytes, lines: list[bytes]) -> SseEvent:
    ev = SseEvent(raw=raw)
    data_lines: list[bytes] = []
    for line in lines:
        if line[:1] == b":":
            continue  # comment (keep-alive)
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data_lines.append(value)
        elif name == b"event":
            ev.event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:
                ev.id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            ev.retry = int(value)
    if data_lines:
        ev.data = b"\n".join(data_lines)
    return ev


def encode_sse_event(
    data: bytes,
    *,
    event_id: str | None = None,
    event: str | None = None,
    retry: int | None = None,
) -> bytes:
    """Our own event around a JSON message (always a single data line: our
    JSON encoder emits no newlines)."""
    parts: list[bytes] = []
    if event is not None:
        parts.append(b"event: " + event.encode("utf-8") + b"\n")
    if event_id is not None:
        parts.append(b"id: " + event_id.encode("utf-8") + b"\n")
    if retry is not None:
        parts.append(b"retry: %d\n" % retry)
    parts.append(b"data: " + data + b"\n\n")
    return b"".join(parts)


def media_type(content_type: bytes | str | None) -> str:
    if content_type is None:
        return ""
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    return content_type.split(";", 1)[0].strip().lower()


def header_value(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for n, v in headers:
        if n == name:
            return v
    return None


# --------------------------------------------------------------------------
# HTTP/1.1 responses from the upstream (sans-IO)
#
# The proxy writes its own requests to the upstream (fixed method, target and
# framing; header values that already passed h11 on the way in), so only the
# responses need parsing.  This parser is strict where a lenient one could be
# steered into reading a different message than the upstream meant: no
# obsolete line folding, one Content-Length (or equal duplicates), only
# "chunked" as Transfer-Encoding and never together with Content-Length,
# bounded head size, header count and chunk-size digits.


class HttpFramingError(ValueError):
    pass


BODY_END = BodyEnd()
ResponseEvent = ResponseHead | bytes | BodyEnd

_TOKEN_CHARS = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_HEX = frozenset(b"0123456789abcdefABCDEF")
_TOKEN_BYTES = bytes(sorted(_TOKEN_CHARS))
# Field values: HTAB, SP, visible ASCII, obs-text (RFC 9110 §5.5).
_FIELD_VALUE_BYTES = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
_HEAD_BYTES = _FIELD_VALUE_BYTES + b"\r\n"
_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection"})


def _check_head_bytes(head: bytes) -> None:
    """Whole-head checks at C speed, before any line is looked at: no NUL
    or other control character, and every line break a CRLF (a bare CR or
    LF is where two parsers would cut lines differently)."""
    if head.translate(None, _HEAD_BYTES):
        raise HttpFramingError("control character in the head")
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
        raise HttpFramingError("bare CR or LF in the head")


# What a head scan found wrong with a header line: ("fold", line) for
# obsolete line folding, ("line", line) for anything else that is not
# ``token ":" value``.
BadLine = tuple[str, bytes]
HeadScan = tuple[bytes, Headers, BadLine | None, int]


def scan_head_py(head: bytes) -> HeadScan:
    """The byte-level half of parsing a request or response head: the
    whole-head checks, the cut into lines, and each header line's name
    (lower-cased) and value (stripped).

    Returns ``(first_line, headers, bad, line_count)``.  Scanning stops at
    the first line that is not a header line: ``bad`` names it and
    ``headers`` holds the pairs before it.  The callers decide in which order
    the request or status line, the headers before ``bad`` and ``bad`` itself
    fail, so this function raises only for the whole-head checks.

    This is the reference; ``native/httphead/httphead.c`` is the same
    function in C, used when it was built (tests hold the two to the same
    results)."""
    _check_head_bytes(head)
    lines = head.split(b"\r\n")
    headers: Headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name.translate(None, _TOKEN_BYTES):
            kind = "fold" if line[:1] in (b" ", b"\t") else "line"
            return lines[0], headers, (kind, line), len(lines)
        headers.append((name.lower(), value.strip(b" \t")))
    return lines[0], headers, None, len(lines)


def _native_scan(scan: Callable[[bytes], HeadScan]) -> Callable[[bytes], HeadScan]:
    def scan_head_native(head: bytes) -> HeadScan:
        try:
            return scan(head)
        except ValueError as exc:  # the C scan's whole-head checks
            raise HttpFramingError(str(exc)) from None

    return scan_head_native


def scan_named(impl: str) -> Callable[[bytes], HeadScan]:
    """The head scan called ``impl``: ``python`` (the reference) or
    ``native`` (the C scan; ImportError when it was not built)."""
    if impl == "python":
        return scan_head_py
    if impl != "native":
        raise ValueError(f"no head scan named {impl!r}")
    from agentwall.core import _httphead

    return _native_scan(_httphead.scan_head)


# The parsers below call the module's ``scan_head`` at parse time, so tests
# can run them over either implementation.
scan_head: Callable[[bytes], HeadScan] = choose(
    "AGENTWALL_HTTPHEAD", lambda: scan_named("native"), scan_named("python")
)


def scan_impl() -> str:
    """Which head scan the parsers use now: ``native`` or ``python``."""
    return "python" if scan_head is scan_head_py else "native"


_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


class ResponseParser:
    """Feed bytes; get ``ResponseHead``, body ``bytes`` pieces and ``BODY_END``.

    One response per ``start()``: after ``BODY_END`` the parser holds any
    bytes that followed (a keep-alive upstream must not send any before the
    next request; we treat them as a framing error on reuse)."""

    __slots__ = (
        "_buf",
        "_chunk_left",
        "_headers_seen",
        "_left",
        "_max_head",
        "_no_body",
        "_state",
        "keep_alive",
    )

    MAX_HEADERS = 256

    def __init__(self, max_head: int = 64 * 1024) -> None:
        self._max_head = max_head
        self._buf = bytearray()
        self.start()

    def start(self, *, no_body: bool = False) -> None:
        """Expect the next response (``no_body``: the answer to a HEAD)."""
        self._state = _HEAD
        self._left = 0
        self._chunk_left = 0
        self._no_body = no_body
        self.keep_alive = False
        self._headers_seen = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def leftover(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[ResponseEvent]:
        if data:
            self._buf += data
        out: list[ResponseEvent] = []
        while True:
            state = self._state
            buf = self._buf
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > self._max_head:
                        raise HttpFramingError(f"response head larger than {self._max_head} bytes")
                    return out
                head = bytes(buf[:end])
                del buf[: end + 4]
                parsed = self._parse_head(head)
                if parsed is None:
                    continue  # 1xx: informational, the real response follows
                out.append(parsed)
                if self._state == _DONE:
                    out.append(BODY_END)  # no body: 204, 304, HEAD, length 0
            elif state == _LENGTH:
                if not buf:
                    return out
                take = min(self._left, len(buf))
                out.append(bytes(buf[:take]))
                del buf[:take]
                self._left -= take
                if self._left == 0:
                    self._state = _DONE
                    out.append(BODY_END)
            elif state == _UNTIL_CLOSE:
                if buf:
                    out.append(bytes(buf))
                    buf.clear()
                return out
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise HttpFramingError("chunk-size line too long")
                    return out
                line = bytes(buf[:end]).split(b";", 1)[0].strip(b" \t")
                del buf[: end + 2]
                if not line or len(line) > 16 or not _HEX.issuperset(line):
                    raise HttpFramingError(f"invalid chunk size {line[:20]!r}")
                size = int(line, 16)
                if size == 0:
                    self._state = _TRAILERS
                else:
                    self._chunk_left = size
                    self._state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                if not buf:
                    return out
                take = min(self._chunk_left, len(buf))
                out.append(bytes(buf[:take]))
                del buf[:take]
                self._chunk_left -= take
                if self._chunk_left == 0:
                    self._state = _CHUNK_CRLF
            elif state == _CHUNK_CRLF:
                if len(buf) < 2:
                    return out
                if buf[:2] != b"\r\n":
                    raise HttpFramingError("chunk data not followed by CRLF")
                del buf[:2]
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > self._max_head:
                        raise HttpFramingError("trailer section too large")
                    return out
                del buf[: end + 2]
                if end == 0:
                    self._state = _DONE
                    out.append(BODY_END)
            else:  # _DONE
                return out

    def close(self) -> list[ResponseEvent]:
        """The upstream closed the connection."""
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
            return [BODY_END]
        if self._state == _DONE:
            return []
        if self._state == _HEAD and not self._buf:
            raise HttpFramingError("connection closed before a response")
        raise HttpFramingError("connection closed in the middle of a response")

    def _parse_head(self, head: bytes) -> ResponseHead | None:
        status_line, headers, bad, line_count = scan_head(head)
        version, _, rest = status_line.partition(b" ")
        code, _, reason = rest.partition(b" ")
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise HttpFramingError(f"invalid status line {status_line[:80]!r}")
        status = int(code)
        content_length: int | None = None
        chunked = False
        close = version == b"HTTP/1.0"
        if line_count - 1 > self.MAX_HEADERS:
            raise HttpFramingError("too many response headers")
        for name, value in headers:
            if name not in _FRAMING_HEADERS:
                continue
            if name == b"content-length":
                if not value.isdigit() or len(value) > 18:
                    raise HttpFramingError(f"invalid Content-Length {value[:20]!r}")
                length = int(value)
                if content_length is not None and content_length != length:
                    raise HttpFramingError("conflicting Content-Length headers")
                content_length = length
            elif name == b"transfer-encoding":
                if value.lower() != b"chunked" or chunked:
                    raise HttpFramingError(f"unsupported Transfer-Encoding {value[:40]!r}")
                chunked = True
            else:  # connection
                tokens = {t.strip().lower() for t in value.split(b",")}
                if b"close" in tokens:
                    close = True
                elif b"keep-alive" in tokens and version == b"HTTP/1.0":
                    close = False
        if bad is not None:
            kind, line = bad
            if kind == "fold":
                raise HttpFramingError("obsolete header line folding")
            raise HttpFramingError(f"invalid header line {line[:80]!r}")
        if 100 <= status < 200:
            if status == 101:
                raise HttpFramingError("the upstream tried to switch protocols")
            return None
        if chunked and content_length is not None:
            raise HttpFramingError("both Transfer-Encoding and Content-Length")
        if self._no_body or status in (204, 304):
            self._state = _DONE
            self.keep_alive = not close
            return ResponseHead(status, reason, headers, not close)
        if chunked:
            self._state = _CHUNK_SIZE
        elif content_length is not None:
            self._left = content_length
            self._state = _LENGTH if content_length else _DONE
        else:
            self._state = _UNTIL_CLOSE
            close = True
        self.keep_alive = not close
        return ResponseHead(status, reason, headers, not close)


# --------------------------------------------------------------------------
# HTTP/1.1 requests from the agent (sans-IO)
#
# The front-end's own parser, in place of a general-purpose library: one
# ``find`` and one ``split`` per head, C-speed byte checks per header, no
# object per event.  Strict where a lenient reader could be steered: no
# obsolete line folding, no whitespace before a header's colon, no control
# characters, a single valid Content-Length (equal duplicates allowed), only
# "chunked" as Transfer-Encoding and never together with Content-Length,
# Host required (HTTP/1.1) and unique, bounded head, chunk-size lines and
# trailers.  The body is never forwarded as received (the proxy re-encodes
# what it parsed), but it must still be framed unambiguously.


class HttpRequestError(ValueError):
    """A request that cannot be read: answer ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


REQUEST_END = RequestEnd()
# The client closed the connection between requests.
CONNECTION_END = ConnectionEnd()
RequestEvent = RequestHead | bytes | RequestEnd | ConnectionEnd

_TARGET_BYTES = bytes(range(0x21, 0x7F))
_REQUEST_SPECIAL_HEADERS = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"host", b"expect"}
)
_R_HEAD, _R_LENGTH, _R_CHUNK_SIZE, _R_CHUNK_DATA, _R_CHUNK_CRLF, _R_TRAILERS, _R_END, _R_DONE = (
    range(8)
)


class RequestParser:
    """Feed bytes; ``next_event()`` gives a ``RequestHead``, body ``bytes``
    pieces, ``REQUEST_END``, ``CONNECTION_END``, or None when it needs more
    bytes.  Raises ``HttpRequestError`` (with the status to answer).  One
    request per ``start()``; bytes that follow it (pipelining) stay buffered
    for the next."""

    __slots__ = ("_buf", "_chunk_left", "_eof", "_left", "_max_head", "_state", "_trailer_bytes")

    def __init__(self, max_head: int = 32 * 1024) -> None:
        self._max_head = max_head
        self._buf = bytearray()
        self._eof = False
        self.start()

    def start(self) -> None:
        self._state = _R_HEAD
        self._left = 0
        self._chunk_left = 0
        self._trailer_bytes = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def feed_eof(self) -> None:
        self._eof = True

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_event(self) -> RequestEvent | None:
        while True:
            state = self._state
            buf = self._buf
            if state == _R_HEAD:
                return self._head()
            if state == _R_LENGTH:
                if not buf:
                    self._need_body()
                    return None
                take = min(self._left, len(buf))
                if take == len(buf):
                    piece = bytes(buf)
                    buf.clear()
                else:
                    piece = bytes(buf[:take])
                    del buf[:take]
                self._left -= take
                if self._left == 0:
                    self._state = _R_END
                return piece
            if state == _R_END:
                self._state = _R_DONE
                return REQUEST_END
            if state == _R_DONE:
                return None
            if state == _R_CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise HttpRequestError(400, "chunk-size line too long")
                    self._need_body()
                    return None
                line = bytes(buf[:end]).split(b";", 1)[0].strip(b" \t")
                del buf[: end + 2]
                if not line or len(line) > 16 or not _HEX.issuperset(line):
                    raise HttpRequestError(400, "invalid chunk size")
                size = int(line, 16)
                if size == 0:
                    self._state = _R_TRAILERS
                else:
                    self._chunk_left = size
                    self._state = _R_CHUNK_DATA
            elif state == _R_CHUNK_DATA:
                if not buf:
                    self._need_body()
                    return None
                take = min(self._chunk_left, len(buf))
                piece = bytes(buf[:take])
                del buf[:take]
                self._chunk_left -= take
                if self._chunk_left == 0:
                    self._state = _R_CHUNK_CRLF
                return piece
            elif state == _R_CHUNK_CRLF:
                if len(buf) < 2:
                    self._need_body()
                    return None
                if buf[:2] != b"\r\n":
                    raise HttpRequestError(400, "chunk data not followed by CRLF")
                del buf[:2]
                self._state = _R_CHUNK_SIZE
            else:  # _R_TRAILERS: read and ignored (never forwarded)
                end = buf.find(b"\r\n")
                if end < 0:
                    if self._trailer_bytes + len(buf) > self._max_head:
                        raise HttpRequestError(431, "trailer section too large")
                    self._need_body()
                    return None
                self._trailer_bytes += end + 2
                if self._trailer_bytes > self._max_head:
                    raise HttpRequestError(431, "trailer section too large")
                del buf[: end + 2]
                if end == 0:
                    self._state = _R_END

    def _need_body(self) -> None:
        if self._eof:
            raise HttpRequestError(400, "connection closed in the middle of a request body")

    def _head(self) -> RequestEvent | None:
        buf = self._buf
        # RFC 9112 §2.2: ignore empty lines before the request line.
        while buf[:2] == b"\r\n":
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self._max_head:
                raise HttpRequestError(431, f"request head exceeds the {self._max_head}-byte limit")
            if self._eof:
                if buf:
                    raise HttpRequestError(400, "connection closed in the middle of a request")
                return CONNECTION_END
            return None
        if end > self._max_head:
            raise HttpRequestError(431, f"request head exceeds the {self._max_head}-byte limit")
        head = bytes(buf[:end])
        del buf[: end + 4]
        try:
            request_line, headers, bad, _ = scan_head(head)
        except HttpFramingError as exc:
            raise HttpRequestError(400, str(exc)) from None
        method, _, rest = request_line.partition(b" ")
        target, _, version = rest.partition(b" ")
        if (
            not method
            or method.translate(None, _TOKEN_BYTES)
            or not target
            or target.translate(None, _TARGET_BYTES)
        ):
            raise HttpRequestError(400, "malformed request line")
        if version == b"HTTP/1.1":
            http_version = b"1.1"
        elif version == b"HTTP/1.0":
            http_version = b"1.0"
        elif len(version) == 8 and version[:5] == b"HTTP/" and version[6:7] == b".":
            raise HttpRequestError(505, "only HTTP/1.1 and HTTP/1.0 are supported")
        else:
            raise HttpRequestError(400, "malformed request line")
        content_length: int | None = None
        content_length_text = b""
        chunked = False
        transfer_encoding = False
        close = http_version == b"1.0"
        expect_continue = False
        hosts = 0
        # The headers before a bad line are judged first, as a line-by-line
        # parser would: the error names the first thing wrong.
        for name, value in headers:
            if name not in _REQUEST_SPECIAL_HEADERS:
                continue
            if name == b"content-length":
                if not value.isdigit() or len(value) > 18:
                    raise HttpRequestError(400, "invalid Content-Length")
                # Repeats must be the same text, not merely the same number
                # ("05" beside "5"): what h11 and strict peers accept.
                if content_length is not None and value != content_length_text:
                    raise HttpRequestError(400, "conflicting Content-Length headers")
                content_length = int(value)
                content_length_text = value
            elif name == b"transfer-encoding":
                if transfer_encoding or value.lower() != b"chunked":
                    raise HttpRequestError(501, "only Transfer-Encoding: chunked is supported")
                transfer_encoding = chunked = True
            elif name == b"connection":
                tokens = [t.strip().lower() for t in value.split(b",")]
                if b"close" in tokens:
                    close = True
            elif name == b"host":
                hosts += 1
            elif name == b"expect" and value.lower() == b"100-continue":
                expect_continue = http_version == b"1.1"
        if bad is not None:
            if bad[0] == "fold":
                raise HttpRequestError(400, "obsolete header line folding")
            raise HttpRequestError(400, "malformed header line")
        if hosts > 1 or (hosts == 0 and http_version == b"1.1"):
            raise HttpRequestError(400, "a request needs exactly one Host header")
        if chunked and content_length is not None:
            raise HttpRequestError(400, "both Transfer-Encoding and Content-Length")
        if chunked and http_version == b"1.0":
            raise HttpRequestError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if chunked:
            self._state = _R_CHUNK_SIZE
        elif content_length:
            self._left = content_length
            self._state = _R_LENGTH
        else:
            self._state = _R_END
        return RequestHead(
            method=method,
            target=target,
            headers=headers,
            http_version=http_version,
            keep_alive=not close,
            expect_continue=expect_continue,
            content_length=content_length,
            head_size=end + 4,
        )
