"""Decode + re-encode cost of the strict JSON-RPC layer.

Run: .venv/bin/python -m pytest bench/bench_core.py --benchmark-enable -q
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from agentwall.core import mcp_http as mh
from agentwall.core.jsonrpc import encode_message, parse
from agentwall.core.mcp import make_call

SMALL = (
    b'{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"read_file",'
    b'"arguments":{"path":"/home/user/project/README.md"}}}'
)


def _text_msg() -> bytes:
    text = 'line: {x} [y] "quoted" \\ back\n' * 2100
    return msgspec.json.encode(
        {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": text}]}}
    )


def _tools_msg() -> bytes:
    tools = [
        {
            "name": f"tool_{i}",
            "description": "Reads a file: returns its text.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "absolute path"},
                    "limit": {"type": "integer", "minimum": 0},
                },
                "required": ["path"],
            },
        }
        for i in range(320)
    ]
    return msgspec.json.encode({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}})


CASES: dict[str, bytes] = {
    "small_call": SMALL,
    "64k_text_result": _text_msg(),
    "64k_tools_list": _tools_msg(),
}


@pytest.mark.parametrize("name", list(CASES))
def test_parse_and_reencode(benchmark: Callable[..., Any], name: str) -> None:
    data = CASES[name]
    benchmark.extra_info["bytes"] = len(data)
    parsed = benchmark(parse, data)
    assert parsed.wire


@pytest.mark.parametrize("name", list(CASES))
def test_baseline_msgspec_decode_encode(benchmark: Callable[..., Any], name: str) -> None:
    """What an unchecked decode + encode costs, for the ratio."""
    data = CASES[name]
    decoder = msgspec.json.Decoder()

    def run() -> bytes:
        return msgspec.json.encode(decoder.decode(data))

    benchmark(run)


def test_small_call_to_call_record(benchmark: Callable[..., Any]) -> None:
    def run() -> object:
        msg = parse(SMALL).message
        assert not isinstance(msg, list)
        return make_call(
            msg,
            session="s",
            transport="stdio",
            origin="client",
            call_id="c",
            identity=None,
            now_ns=0,
        )

    benchmark(run)


def test_encode_small(benchmark: Callable[..., Any]) -> None:
    msg = parse(SMALL).message
    benchmark(encode_message, msg)


# A front-end's typical exchange: an SDK client's request head (9 headers)
# and an upstream's JSON answer head (5 headers), each parsed once per call.
REQUEST_HEAD = (
    b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
    b"Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-11-25\r\n"
    b"Mcp-Session-Id: 3f2a9c1e5b7d4a8f9e0c1b2a3d4e5f60\r\nUser-Agent: python-httpx/0.28.1\r\n"
    b"Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nContent-Length: 123\r\n\r\n"
) + b"x" * 123
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ndate: Sat, 21 Nov 2026 19:00:00 GMT\r\nserver: uvicorn\r\n"
    b"content-type: application/json\r\nmcp-session-id: 3f2a9c1e5b7d4a8f9e0c1b2a3d4e5f60\r\n"
    b"content-length: 120\r\n\r\n"
) + b"y" * 120


@pytest.fixture(params=["native", "python"])
def head_scan(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    name: str = request.param
    if name == "native":
        pytest.importorskip("agentwall.core._httphead")
    monkeypatch.setattr(mh, "scan_head", mh.scan_named(name))
    return name


def test_http_request_and_response_heads(benchmark: Callable[..., Any], head_scan: str) -> None:
    """The front-end's two HTTP parsers on one exchange, over the C head
    scan (native/httphead/) and over the Python reference."""

    def run() -> object:
        parser = mh.RequestParser()
        parser.feed(REQUEST_HEAD)
        head = parser.next_event()
        return head, mh.ResponseParser().feed(RESPONSE)

    head, events = benchmark(run)
    assert isinstance(head, mh.RequestHead)
    assert len(head.headers) == 9
    assert isinstance(events[0], mh.ResponseHead)
    assert events[-1] is mh.BODY_END
