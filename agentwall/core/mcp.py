"""MCP classification: a parsed JSON-RPC message becomes a ``Call`` to judge.

The target is what policies name: the tool for ``tools/call``, the URI for
``resources/read``, the prompt for ``prompts/get``, and "" for every other
method.  MCP defines ``params`` as an object for every method, so array params
are refused here, and so are malformed params of the methods whose target we
read (a tool name that is not a string could slip past a rule on names).
"""

from __future__ import annotations

from typing import Any

from msgspec import UNSET

from agentwall.core.canonical import canonical_json
from agentwall.core.jsonrpc import ErrorResponse, Message, Notification, Request, Response
from agentwall.errors import INVALID_PARAMS, FrameError
from agentwall.types import Call, Identity, MessageKind, Origin, Transport

# method -> (member naming the target, member that must be an object if present)
_TARGETS: dict[str, tuple[str, str | None]] = {
    "tools/call": ("name", "arguments"),
    "resources/read": ("uri", None),
    "prompts/get": ("name", "arguments"),
}


def make_call(
    message: Message,
    *,
    session: str,
    transport: Transport,
    origin: Origin,
    call_id: str,
    identity: Identity | None,
    now_ns: int,
    response_to: str = "",
    client: str | None = None,
) -> Call:
    """Raises ``FrameError`` with -32602 for params MCP does not allow.

    Responses carry no method: ``response_to`` is the method of the request
    they answer, when the caller tracked it, and ``params`` is the result (or
    the error object)."""
    # type() tests rather than isinstance with a union: this runs per message,
    # and the message types are final (frozen msgspec Structs).
    kind: MessageKind
    rpc_id: int | str | None
    if type(message) is Request:
        rpc_id = message.id
        kind = "request"
    elif type(message) is Notification:
        rpc_id = None
        kind = "notification"
    else:
        assert isinstance(message, Response | ErrorResponse)
        return _response_call(
            message,
            session=session,
            transport=transport,
            origin=origin,
            call_id=call_id,
            identity=identity,
            now_ns=now_ns,
            response_to=response_to,
            client=client,
        )
    params: Any = message.params
    method = message.method
    if params is UNSET:
        params = None
    elif type(params) is list:
        raise _bad_params(f"{method}: params must be an object", rpc_id)
    target = _target(method, params, rpc_id) if method in _TARGETS else ""
    return Call(
        call_id=call_id,
        session=session,
        transport=transport,
        origin=origin,
        kind=kind,
        rpc_id=rpc_id,
        method=method,
        target=target,
        params=params,
        params_json=canonical_json(params),
        identity=identity,
        received_ns=now_ns,
        client=client,
    )


def _response_call(
    message: Response | ErrorResponse,
    *,
    session: str,
    transport: Transport,
    origin: Origin,
    call_id: str,
    identity: Identity | None,
    now_ns: int,
    response_to: str,
    client: str | None,
) -> Call:
    if isinstance(message, Response):
        body: Any = message.result
    else:
        body = {"error": {"code": message.error.code, "message": message.error.message}}
        if message.error.data is not UNSET:
            body["error"]["data"] = message.error.data
    return Call(
        call_id=call_id,
        session=session,
        transport=transport,
        origin=origin,
        kind="response",
        rpc_id=message.id,
        method=response_to,
        target="",
        params=body,
        params_json=canonical_json(body),
        identity=identity,
        received_ns=now_ns,
        client=client,
    )


def _target(method: str, params: dict[str, Any] | None, rpc_id: int | str | None) -> str:
    spec = _TARGETS.get(method)
    if spec is None:
        return ""
    name_key, object_key = spec
    if params is None:
        raise _bad_params(f"{method}: params.{name_key} is required", rpc_id)
    target = params.get(name_key)
    if not isinstance(target, str):
        raise _bad_params(f"{method}: params.{name_key} must be a string", rpc_id)
    if object_key is not None and not isinstance(params.get(object_key, {}), dict):
        raise _bad_params(f"{method}: params.{object_key} must be an object", rpc_id)
    return target


def _bad_params(reason: str, rpc_id: int | str | None) -> FrameError:
    return FrameError(f"invalid params: {reason}", rpc_code=INVALID_PARAMS, rpc_id=rpc_id)
