"""Strict JSON-RPC 2.0 parsing and re-encoding, sans-IO.

The proxy judges what it parsed and forwards its own re-encoding of that, never
the sender's bytes.  That is only safe if every parser along the way would read
the same message, so anything two parsers could disagree on is refused here:

* duplicate object keys anywhere in the document (msgspec, orjson and most
  JSON libraries silently keep the last one; some keep the first) -> -32600;
* invalid UTF-8, lone UTF-16 surrogates (``"\\ud800"``; UTF-8 cannot carry
  them and decoders replace, keep or refuse them differently), numbers out of
  the float range, any JSON syntax error, a byte-order mark -> -32700;
* a message that is both a request and a response, a non-string ``method``,
  a missing or wrong ``jsonrpc``, ids that are bools, floats, objects, arrays
  or (for requests) null, non-structured ``params``, members JSON-RPC does not
  define (the official MCP SDKs refuse them too) -> -32600;
* nesting deeper than ``max_depth`` and documents over ``max_size`` -> -32600,
  checked before the decoder recurses, so 100,000 nested arrays are a clean
  error rather than a RecursionError.

Batches (MCP 2025-03-26) are returned as a list whose items are messages or
``FrameError`` for the items that are invalid on their own, so each item can
get its own error response.  An empty batch is -32600.  A duplicate key
anywhere in a batch refuses the whole batch: the document is ambiguous.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from itertools import accumulate, count
from typing import Any, NamedTuple

import msgspec
from msgspec import UNSET, UnsetType

from agentwall.core.jsonrpc_records import (
    ErrorObject as ErrorObject,
)
from agentwall.core.jsonrpc_records import (
    ErrorResponse as ErrorResponse,
)
from agentwall.core.jsonrpc_records import (
    Notification as Notification,
)
from agentwall.core.jsonrpc_records import (
    Request as Request,
)
from agentwall.core.jsonrpc_records import (
    Response as Response,
)
from agentwall.core.jsonrpc_records import (  # re-exported: importers use jsonrpc.<Name>
    RpcId as RpcId,
)
from agentwall.core.jsonrpc_records import (
    _Envelope as _Envelope,
)
from agentwall.core.native import choose
from agentwall.errors import INVALID_REQUEST, PARSE_ERROR, FrameError

DEFAULT_MAX_SIZE = 16 * 1024 * 1024
# Containers, counted from the top: ``{"params":{"a":[1]}}`` has depth 3.
# MCP tool schemas in a tools/list result reach about 15; the policy evaluator
# walks arguments recursively, so the cap also bounds its stack.
DEFAULT_MAX_DEPTH = 128


Message = Request | Notification | Response | ErrorResponse
# Items that are invalid on their own are FrameError, in their place.
Batch = list[Message | FrameError]


class Parsed(NamedTuple):
    message: Message | Batch
    # The re-encoding of ``message``: what the other side must receive.  For a
    # batch this is the whole batch; forward items with ``encode_message``.
    wire: bytes


_new_tuple = tuple.__new__


_CONTAINER_TYPES = frozenset({dict, list, _Envelope, ErrorObject})
_typed_decoder = msgspec.json.Decoder(_Envelope | list[_Envelope])
_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

_BRACKET_MAP = bytes.maketrans(b"{}", b"[]")
# Brackets, quotes, and every character that may follow a backslash in JSON.
_NOT_ESCAPE_SYNTAX = bytes(b for b in range(256) if b not in b'[]{}"\\/bfnrtu')
_NOT_BRACKETS_OR_QUOTES = bytes(b for b in range(256) if b not in b'[]{}"')
_PRUNE_PASSES = 8
# The decoded-value walk may look at this many children, plus one per
# _BYTES_PER_WALK_STEP input bytes, before the byte scan takes over.  Text-
# heavy documents (few containers) finish well within it; container-heavy
# ones (a tools/list result) give up early, since a walk step costs ~25x a
# scanned byte (see bench/bench_core.py).
_WALK_STEPS = 64
_BYTES_PER_WALK_STEP = 256
# A colon spelt as an escape decodes to a colon the raw text does not show,
# which would blind the fast duplicate-key count below.
_ESCAPED_COLONS = (b"\\u003a", b"\\u003A")


def parse_message(
    data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH
) -> Message | Batch:
    """One JSON-RPC message or a batch; raises ``FrameError`` (and only that)."""
    return parse(data, max_size=max_size, max_depth=max_depth).message


def parse(
    data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH
) -> Parsed:
    """Like ``parse_message``, also returning the re-encoding (so the proxy
    does not encode twice)."""
    if len(data) > max_size:
        raise FrameError(
            f"message of {len(data)} bytes exceeds the {max_size}-byte limit",
            rpc_code=INVALID_REQUEST,
        )
    try:
        decoded = _typed_decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        # msgspec.ValidationError is a DecodeError: the slow path below tells
        # invalid JSON (-32700) from valid JSON that is not JSON-RPC (-32600).
        return _parse_slow(data, max_depth)
    brackets, colons, escaped_colon_hint = syntax_counts(data)
    # The first test of _too_deep_decoded, inlined: it settles every message
    # with few brackets, i.e. nearly all of them (this runs per message).
    if brackets > max_depth and _too_deep_decoded(data, decoded, max_depth):
        raise _too_deep(max_depth)
    message: Message | Batch
    if type(decoded) is list:
        if not decoded:
            raise FrameError("empty batch", rpc_code=INVALID_REQUEST)
        message = [_classify_or_error(item) for item in decoded]
        if any(type(item) is FrameError for item in message):
            # An item that is invalid on its own cannot be encoded, and
            # leaving it out of the wire would break the colon count of the
            # duplicate-key check: the slow path handles such batches.
            return _parse_slow(data, max_depth)
        wire = _encoder.encode(message)
    else:
        message = _classify(decoded)
        wire = _encoder.encode(message)
    # _has_duplicate_keys, with its common case inlined.
    if escaped_colon_hint:
        if _has_duplicate_keys(data, wire):
            raise _duplicate_error(data)
    elif colons != syntax_counts(wire)[1]:
        raise _duplicate_error(data)
    # tuple.__new__: a NamedTuple's own constructor is a Python-level
    # function, several times slower than building the tuple.
    return _new_tuple(Parsed, (message, wire))


def syntax_counts_py(data: bytes) -> tuple[int, int, bool]:
    """``(brackets, colons, escaped_colon_hint)`` of raw JSON: the number of
    ``[`` and ``{`` bytes, the number of ``:`` bytes (strings included, both),
    and whether ``\\u003`` (the start of an escaped colon) occurs.  The
    reference for the one-pass C scan (native/jsonscan/jsonscan.c)."""
    return data.count(b"[") + data.count(b"{"), data.count(b":"), b"\\u003" in data


def counts_named(impl: str) -> Callable[[bytes], tuple[int, int, bool]]:
    """``python`` (the reference) or ``native`` (ImportError when the C scan
    was not built)."""
    if impl == "python":
        return syntax_counts_py
    if impl != "native":
        raise ValueError(f"no syntax count named {impl!r}")
    from agentwall.core import _jsonscan

    return _jsonscan.syntax_counts


def counts_impl() -> str:
    """Which byte counts parse uses now: ``native`` or ``python``."""
    return "python" if syntax_counts is syntax_counts_py else "native"


# One pass over the bytes where the reference takes four: 13 against 90 us
# on 64 KiB here (bench/bench_core.py).
syntax_counts: Callable[[bytes], tuple[int, int, bool]] = choose(
    "AGENTWALL_JSONSCAN", lambda: counts_named("native"), counts_named("python")
)


def encode_message(message: Message | Batch) -> bytes:
    """The bytes the other side receives: compact JSON, members in JSON-RPC
    order.  Batch items that are FrameError are left out (answer them with
    ``error_response``)."""
    if isinstance(message, list):
        return _encoder.encode([m for m in message if not isinstance(m, FrameError)])
    return _encoder.encode(message)


def error_response(rpc_id: RpcId | None, code: int, message: str, data: Any = None) -> bytes:
    error = ErrorObject(code=code, message=message, data=UNSET if data is None else data)
    return _encoder.encode(ErrorResponse(id=rpc_id, error=error))


def frame_error_response(error: FrameError) -> bytes:
    return error_response(error.rpc_id, error.rpc_code, str(error))


# The id of a message seen only by its first bytes: top-level "jsonrpc" and
# "method" strings may come first, then "id" with an integer or a string.
_ID_PREFIX = re.compile(
    rb'\s*\{\s*(?:"(?:jsonrpc|method)"\s*:\s*"(?:[^"\\\n]|\\.){0,200}"\s*,\s*){0,2}'
    rb'"id"\s*:\s*(-?(?:0|[1-9][0-9]{0,30})(?=\s*[,}])|"(?:[^"\\\n]|\\.){0,200}")'
)


def sniff_id(prefix: bytes) -> RpcId | None:
    """Best effort: the id of a message from its first bytes, for answering
    a line too long to parse (so the sender is not left waiting).  Only ever
    used to address an error; never to forward anything."""
    match = _ID_PREFIX.match(prefix)
    if match is None:
        return None
    try:
        value = _any_decoder.decode(match.group(1))
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return value if type(value) in (int, str) else None


def _classify(env: _Envelope) -> Message:
    rpc_id = env.id
    if env.method is not UNSET:
        if env.result is not UNSET or env.error is not UNSET:
            raise _invalid("a message cannot have both method and result/error", rpc_id)
        if rpc_id is UNSET:
            return Notification(method=env.method, params=env.params)
        if rpc_id is None:
            # MCP: "Unlike base JSON-RPC, the ID MUST NOT be null."
            raise _invalid("request id must not be null", None)
        return Request(id=rpc_id, method=env.method, params=env.params)
    if env.params is not UNSET:
        raise _invalid("params without method", rpc_id)
    if rpc_id is UNSET:
        raise _invalid("a message needs a method (request, notification) or an id (response)", None)
    if env.error is not UNSET:
        if env.result is not UNSET:
            raise _invalid("a response cannot have both result and error", rpc_id)
        return ErrorResponse(id=rpc_id, error=env.error)
    if env.result is UNSET:
        raise _invalid("a response needs result or error", rpc_id)
    if rpc_id is None:
        raise _invalid("a result response needs a non-null id", None)
    return Response(id=rpc_id, result=env.result)


def _classify_or_error(env: _Envelope) -> Message | FrameError:
    try:
        return _classify(env)
    except FrameError as exc:
        return exc


def _invalid(reason: str, rpc_id: RpcId | UnsetType | None) -> FrameError:
    return FrameError(
        f"invalid JSON-RPC message: {reason}",
        rpc_code=INVALID_REQUEST,
        rpc_id=None if rpc_id is UNSET else rpc_id,
    )


def _parse_slow(data: bytes, max_depth: int) -> Parsed:
    """The error path: decode generically to say precisely what is wrong."""
    try:
        value = _any_decoder.decode(data)
    except RecursionError:
        raise FrameError("JSON nesting too deep", rpc_code=INVALID_REQUEST) from None
    except UnicodeDecodeError as exc:
        raise FrameError(f"invalid UTF-8 at byte {exc.start}", rpc_code=PARSE_ERROR) from None
    except msgspec.DecodeError as exc:
        raise FrameError(_parse_error_text(exc), rpc_code=PARSE_ERROR) from None
    if _too_deep_decoded(data, value, max_depth):
        raise _too_deep(max_depth)
    if _has_duplicate_keys(data, _encoder.encode(value)):
        raise _duplicate_error(data)
    message: Message | Batch
    if isinstance(value, list):
        if not value:
            raise FrameError("empty batch", rpc_code=INVALID_REQUEST)
        message = [_item_or_error(item) for item in value]
    else:
        message = _item(value)
    return Parsed(message, encode_message(message))


def _item(value: Any) -> Message:
    if not isinstance(value, dict):
        raise _invalid(f"expected an object, got {_json_type(value)}", None)
    try:
        env = msgspec.convert(value, _Envelope)
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc), _recover_id(value)) from None
    return _classify(env)


def _item_or_error(value: Any) -> Message | FrameError:
    try:
        return _item(value)
    except FrameError as exc:
        return exc


def _recover_id(value: dict[str, Any]) -> RpcId | None:
    rpc_id = value.get("id")
    # type() rather than isinstance: True is an int to Python, not to JSON-RPC.
    return rpc_id if type(rpc_id) in (int, str) else None


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _parse_error_text(exc: msgspec.DecodeError) -> str:
    text = str(exc)
    if "truncated" in text or "surrogate" in text:
        # msgspec reports a lone \\ud800 as truncated input.
        return f"invalid JSON (unterminated input or lone UTF-16 surrogate): {text}"
    return f"invalid JSON: {text}"


def _too_deep_decoded(data: bytes, value: Any, limit: int) -> bool:
    """Exact depth check of a decoded document.  msgspec's own recursion
    guard kept the decode safe at any depth (RecursionError becomes a
    FrameError above); this enforces the configured, much lower limit.

    Fewer brackets than the limit cannot nest deeper, which settles small
    messages for free.  Otherwise walk the decoded value, which is cheap when
    there are few containers (a 64 KiB file read with brackets in its text);
    when the walk runs over its budget (a large tools/list result), scan the
    bytes instead, whose cost does not depend on the number of values.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    verdict = _value_too_deep(value, limit, budget=_WALK_STEPS + len(data) // _BYTES_PER_WALK_STEP)
    if verdict is None:
        return _brackets_too_deep(data, limit)
    return verdict


def _too_deep(limit: int) -> FrameError:
    return FrameError(f"JSON nesting deeper than {limit}", rpc_code=INVALID_REQUEST)


def _brackets_too_deep(data: bytes, limit: int) -> bool:
    """Depth from the raw bytes, in C-speed byte passes.

    The document is reduced to its structural brackets (string contents
    removed), then innermost empty pairs are removed one level per pass:
    shallow documents, the common case, empty in a few passes.  What is left
    after those has lost exactly that many levels on its deepest path, and a
    linear prefix-sum finishes the job, so hostile input stays linear.  Input
    that is not JSON may be reported as too deep; it fails either way.

    Costs grow with bytes and escapes; see ``_too_deep_decoded``.
    """
    brackets = _structural_brackets(data)
    if b"[" * (limit + 1) in brackets:
        return True
    for passes in range(_PRUNE_PASSES):
        if not brackets:
            return False
        if passes >= limit:
            return True
        brackets = brackets.replace(b"[]", b"")
    if not brackets:
        return False
    # Depth after each close: opens so far minus closes so far.
    opens = accumulate(map(len, brackets.split(b"]")))
    deepest = max(map(operator.sub, opens, count()), default=0)
    return deepest + _PRUNE_PASSES > limit


def _value_too_deep(value: Any, limit: int, budget: int = -1) -> bool | None:
    """Depth of a decoded value (envelopes and error objects count as the
    objects they were), iteratively.  None when more than ``budget`` children
    would have to be looked at (-1: no budget)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop = stack.pop
    push = stack.append
    while stack:
        node, depth = pop()
        if depth > limit:
            return True
        kind = type(node)
        children: Any
        if kind is dict:
            children = node.values()
        elif kind is list:
            children = node
        elif kind is _Envelope:
            children = (node.params, node.result, node.error)
        elif kind is ErrorObject:
            children = (node.data,)
        else:
            continue
        if budget >= 0:
            budget -= len(children)
            if budget < 0:
                return None
        depth += 1
        for child in children:
            if type(child) in _CONTAINER_TYPES:
                push((child, depth))
    return False


def _structural_brackets(data: bytes) -> bytes:
    """The brackets outside strings, with ``{}`` spelt ``[]``.

    Keeps the characters that can follow a backslash so escapes pair up as a
    JSON reader pairs them; drops escaped backslashes, then escaped quotes;
    what is left between quotes is string content.
    """
    kept = data.translate(None, _NOT_ESCAPE_SYNTAX)
    if b"\\" in kept:
        kept = kept.replace(b"\\\\", b"")
    if b"\\" in kept:
        kept = kept.replace(b'\\"', b"")
    kept = kept.translate(_BRACKET_MAP, _NOT_BRACKETS_OR_QUOTES).replace(b'""', b"")
    if b'"' in kept:
        kept = b"".join(kept.split(b'"')[0::2])
    return kept


def _has_duplicate_keys(raw: bytes, wire: bytes) -> bool:
    """Every object member is one structural colon; every other colon sits in a
    string.  Re-encoding keeps all strings and all members except duplicates
    (the decoder kept one of each), and msgspec never escapes a colon, so the
    colon counts are equal exactly when no key was repeated.  The one thing
    that breaks the count, a colon spelt ``\\u003a``, takes the exact path."""
    if b"\\u003" in raw and any(esc in raw for esc in _ESCAPED_COLONS):
        return _duplicate_keys_exact(raw)
    return raw.count(b":") != wire.count(b":")


def _duplicate_keys_exact(raw: bytes) -> bool:
    found = False

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal found
        out = dict(pairs)
        found = found or len(out) != len(pairs)
        return out

    # Only reached for input msgspec already accepted, so stdlib json (with
    # its NaN and surrogate leniency) sees nothing it would read differently.
    json.loads(raw, object_pairs_hook=hook)
    return found


def _duplicate_error(raw: bytes) -> FrameError:
    """-32600, with the request id only when "id" itself is not repeated at the
    top level (then the id every parser reads is the same)."""
    rpc_id: RpcId | None = None
    try:
        top_pairs: list[tuple[str, Any]] = []

        def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            # The outermost object is built last.
            top_pairs[:] = pairs
            return dict(pairs)

        top = json.loads(raw, object_pairs_hook=hook)
        if isinstance(top, dict):
            ids = [v for k, v in top_pairs if k == "id"]
            if len(ids) == 1 and type(ids[0]) in (int, str):
                rpc_id = ids[0]
    except (ValueError, RecursionError):
        pass
    return FrameError(
        "invalid JSON-RPC message: duplicate object key", rpc_code=INVALID_REQUEST, rpc_id=rpc_id
    )
