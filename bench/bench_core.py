"""Decode + re-encode cost of the strict JSON-RPC layer.

Run: .venv/bin/python -m pytest bench/bench_core.py --benchmark-enable -q
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

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
