from __future__ import annotations

import pytest

from agentwall.core.canonical import canonical_json
from agentwall.core.jsonrpc import parse_message
from agentwall.core.mcp import make_call
from agentwall.errors import INVALID_PARAMS, FrameError
from agentwall.types import Call, Identity


def _call(data: bytes, **kw: object) -> Call:
    message = parse_message(data)
    assert not isinstance(message, list)
    args: dict[str, object] = {
        "session": "s1",
        "transport": "stdio",
        "origin": "client",
        "call_id": "c1",
        "identity": None,
        "now_ns": 123,
    }
    args.update(kw)
    return make_call(message, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "method", "target"),
    [
        (
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read","arguments":{}}}',
            "tools/call",
            "read",
        ),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}',
            "tools/call",
            "t",
        ),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///etc/x"}}',
            "resources/read",
            "file:///etc/x",
        ),
        (
            b'{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","arguments":{"a":"b"}}}',
            "prompts/get",
            "p",
        ),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', "tools/list", ""),
        (
            b'{"jsonrpc":"2.0","method":"notifications/initialized"}',
            "notifications/initialized",
            "",
        ),
    ],
)
def test_targets(data: bytes, method: str, target: str) -> None:
    call = _call(data)
    assert (call.method, call.target) == (method, target)


def test_call_fields() -> None:
    ident = Identity(subject="alice", issuer="https://idp")
    call = _call(
        b'{"jsonrpc":"2.0","id":"r1","method":"tools/call","params":{"name":"t","arguments":{"b":1,"a":"\xc3\xa9"}}}',
        identity=ident,
        origin="server",
    )
    assert call.kind == "request"
    assert call.rpc_id == "r1"
    assert call.params == {"name": "t", "arguments": {"b": 1, "a": "é"}}
    assert call.params_json == canonical_json(call.params)
    assert call.params_json == '{"arguments":{"a":"é","b":1},"name":"t"}'.encode()
    assert (call.session, call.transport, call.origin, call.call_id) == (
        "s1",
        "stdio",
        "server",
        "c1",
    )
    assert call.identity == ident
    assert call.received_ns == 123


def test_notification_and_absent_params() -> None:
    call = _call(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert call.kind == "notification"
    assert call.rpc_id is None
    assert call.params is None
    assert call.params_json == b"null"


def test_responses() -> None:
    call = _call(b'{"jsonrpc":"2.0","id":4,"result":{"roots":[]}}', response_to="roots/list")
    assert (call.kind, call.rpc_id, call.method, call.params) == (
        "response",
        4,
        "roots/list",
        {"roots": []},
    )
    err = _call(b'{"jsonrpc":"2.0","id":4,"error":{"code":-1,"message":"m","data":[1]}}')
    assert err.params == {"error": {"code": -1, "message": "m", "data": [1]}}


@pytest.mark.parametrize(
    "params",
    [
        b'{"name":5}',
        b'{"name":null}',
        b'{"arguments":{}}',
        b'{"name":"t","arguments":[1]}',
        b'{"name":"t","arguments":"x"}',
        b'{"name":"t","arguments":null}',
        b'["t"]',
    ],
)
def test_malformed_tools_call_is_invalid_params(params: bytes) -> None:
    data = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":' + params + b"}"
    with pytest.raises(FrameError) as info:
        _call(data)
    assert info.value.rpc_code == INVALID_PARAMS
    assert info.value.rpc_id == 7


@pytest.mark.parametrize(
    "data",
    [
        b'{"jsonrpc":"2.0","id":7,"method":"tools/call"}',
        b'{"jsonrpc":"2.0","id":7,"method":"resources/read","params":{"uri":["x"]}}',
        b'{"jsonrpc":"2.0","id":7,"method":"prompts/get","params":{}}',
        b'{"jsonrpc":"2.0","id":7,"method":"ping","params":[1]}',
    ],
)
def test_other_malformed_params(data: bytes) -> None:
    with pytest.raises(FrameError) as info:
        _call(data)
    assert info.value.rpc_code == INVALID_PARAMS
