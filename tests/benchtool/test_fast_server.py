"""The built-in fast upstream is a real MCP server: the official SDK client says so.

Raw-socket tests cover the HTTP/1.1 and Streamable HTTP details the SDK
client never exercises (pipelining, chunked bodies, session errors).
"""

from __future__ import annotations

import socket
from typing import Any

import anyio
import orjson
import pytest
from mcp import Client

from agentwall.benchtool.channels import ResponseParser, sse_messages
from agentwall.benchtool.procs import FastUpstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _sdk_session(url: str, mode: str) -> dict[str, Any]:
    seen: dict[str, Any] = {"progress": [], "order": []}

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen["progress"].append(progress)
        seen["order"].append("progress")

    async def main() -> None:
        async with Client(url, mode=mode) as client:  # type: ignore[arg-type]
            tools = await client.list_tools()
            seen["tools"] = sorted(t.name for t in tools.tools)
            echo = await client.call_tool("echo", {"text": "héllo"})
            seen["echo"] = echo.content[0].text  # type: ignore[union-attr]
            done = await client.call_tool(
                "progress", {"steps": 3, "delay_ms": 30}, progress_callback=on_progress
            )
            seen["order"].append("result")
            seen["progress_result"] = done.content[0].text  # type: ignore[union-attr]
            bad = await client.call_tool("echo", {"text": 5})
            seen["bad_args_is_error"] = bad.is_error
            resources = await client.list_resources()
            seen["resources"] = [str(r.uri) for r in resources.resources]
            read = await client.read_resource("memo://readme")
            seen["readme"] = read.contents[0].text  # type: ignore[union-attr]
            prompt = await client.get_prompt("summarise", {"text": "abc"})
            seen["prompt"] = prompt.messages[0].content.text  # type: ignore[union-attr]
            seen["version"] = client.session.protocol_version

    anyio.run(main)
    return seen


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_sdk_client_full_session(fast_upstream: FastUpstream, mode: str) -> None:
    seen = _sdk_session(fast_upstream.url, mode)
    assert seen["tools"] == sorted(
        ["echo", "read_file", "write_file", "search", "fetch_url", "run_command", "progress"]
    )
    assert seen["echo"] == "héllo"
    assert seen["progress"] == [1.0, 2.0, 3.0]
    assert seen["order"] == ["progress", "progress", "progress", "result"]
    assert seen["progress_result"] == "done after 3 steps"
    assert seen["resources"] == ["memo://readme"]
    assert "readme" in seen["readme"]
    assert seen["prompt"] == "Summarise: abc"
    assert seen["version"] == "2025-11-25"


Reply = tuple[int, dict[bytes, bytes], bytes]


def _rpc(rpc_id: int | None, method: str, params: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if rpc_id is not None:
        message["id"] = rpc_id
    if params is not None:
        message["params"] = params
    return orjson.dumps(message)


def _echo(rpc_id: int, text: str) -> bytes:
    return _rpc(rpc_id, "tools/call", {"name": "echo", "arguments": {"text": text}})


def _raw(upstream: FastUpstream, data: bytes, expect: int) -> list[Reply]:
    host, port = upstream.url.split("//")[1].split("/")[0].split(":")
    parser = ResponseParser()
    out: list[Reply] = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        while len(out) < expect:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out.extend(parser.feed(chunk))
    return out


def _post(body: bytes, sid: bytes | None = None, extra: bytes = b"") -> bytes:
    head = b"POST /mcp HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    head += b"accept: application/json, text/event-stream\r\n"
    if sid is not None:
        head += b"mcp-session-id: " + sid + b"\r\n"
    return head + extra + b"content-length: %d\r\n\r\n" % len(body) + body


INIT = _rpc(
    1,
    "initialize",
    {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
)


def _session(upstream: FastUpstream) -> bytes:
    [(status, headers, body)] = _raw(upstream, _post(INIT), 1)
    assert status == 200
    assert orjson.loads(body)["result"]["protocolVersion"] == "2025-06-18"
    return headers[b"mcp-session-id"]


def test_pipelined_requests_answer_in_order(fast_upstream: FastUpstream) -> None:
    sid = _session(fast_upstream)
    data = b"".join(_post(_echo(i, f"n{i}"), sid) for i in range(5))
    replies = [orjson.loads(body) for _, _, body in _raw(fast_upstream, data, 5)]
    assert [r["id"] for r in replies] == [0, 1, 2, 3, 4]
    assert [r["result"]["content"][0]["text"] for r in replies] == [f"n{i}" for i in range(5)]


def test_chunked_request_body(fast_upstream: FastUpstream) -> None:
    sid = _session(fast_upstream)
    body = _rpc(7, "ping")
    chunked = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:])
    head = b"POST /mcp HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
    head += b"mcp-session-id: " + sid + b"\r\n\r\n"
    [(status, _, reply)] = _raw(fast_upstream, head + chunked, 1)
    assert status == 200
    assert orjson.loads(reply) == {"jsonrpc": "2.0", "id": 7, "result": {}}


def test_session_rules(fast_upstream: FastUpstream) -> None:
    ping = _rpc(2, "ping")
    [(status, _, body)] = _raw(fast_upstream, _post(ping), 1)
    assert status == 400
    assert orjson.loads(body)["error"]["code"] == -32600
    [(status, _, _)] = _raw(fast_upstream, _post(ping, b"nope"), 1)
    assert status == 404
    sid = _session(fast_upstream)
    note = _rpc(None, "notifications/initialized")
    [(status, _, body)] = _raw(fast_upstream, _post(note, sid), 1)
    assert (status, body) == (202, b"")
    get = b"GET /mcp HTTP/1.1\r\nhost: x\r\nmcp-session-id: " + sid + b"\r\n\r\n"
    [(status, headers, _)] = _raw(fast_upstream, get, 1)
    assert status == 405
    assert b"POST" in headers[b"allow"]
    delete = b"DELETE /mcp HTTP/1.1\r\nhost: x\r\nmcp-session-id: " + sid + b"\r\n\r\n"
    [(status, _, _)] = _raw(fast_upstream, delete, 1)
    assert status == 200
    [(status, _, _)] = _raw(fast_upstream, _post(ping, sid), 1)
    assert status == 404


def test_protocol_errors(fast_upstream: FastUpstream) -> None:
    sid = _session(fast_upstream)
    [(status, _, body)] = _raw(fast_upstream, _post(b"{not json", sid), 1)
    assert status == 400
    assert orjson.loads(body)["error"]["code"] == -32700
    unknown = _rpc(3, "nope/nope")
    [(_, _, body)] = _raw(fast_upstream, _post(unknown, sid), 1)
    assert orjson.loads(body)["error"]["code"] == -32601
    no_tool = _rpc(4, "tools/call", {"name": "zzz", "arguments": {}})
    [(_, _, body)] = _raw(fast_upstream, _post(no_tool, sid), 1)
    assert orjson.loads(body)["error"]["code"] == -32602
    batch = b"[" + _rpc(5, "ping") + b"," + _rpc(None, "notifications/x") + b"]"
    [(status, _, body)] = _raw(fast_upstream, _post(batch, sid), 1)
    assert status == 200
    assert orjson.loads(body) == [{"jsonrpc": "2.0", "id": 5, "result": {}}]
    [(status, _, _)] = _raw(fast_upstream, b"BROKEN\r\n\r\n", 1)
    assert status == 400
    smuggle = b"POST /mcp HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"
    [(status, _, _)] = _raw(fast_upstream, smuggle, 1)
    assert status == 400


def test_progress_streams_as_sse_events(fast_upstream: FastUpstream) -> None:
    sid = _session(fast_upstream)
    params = {"name": "progress", "arguments": {"steps": 2}, "_meta": {"progressToken": "t"}}
    call = _rpc(9, "tools/call", params)
    [(status, headers, body)] = _raw(fast_upstream, _post(call, sid), 1)
    assert status == 200
    assert headers[b"content-type"].startswith(b"text/event-stream")
    messages = sse_messages(body)
    assert [m.get("method") for m in messages] == ["notifications/progress"] * 2 + [None]
    assert messages[-1]["id"] == 9
