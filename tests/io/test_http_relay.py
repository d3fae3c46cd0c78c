"""What the upstream sends back, through a real ``agentwall start``: every
JSON body and SSE event is parsed strictly, judged and re-encoded; responses
to ids the agent did not send are dropped and audited; what cannot be parsed
becomes a JSON-RPC error.  Also: which session key rate limits use.

The upstream is the scripted raw HTTP server of test_http_front.py; what it
answers depends on the tool name the test calls.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h11
import pytest
from test_http_front import (
    ScriptedUpstream,
    port_of,
    post,
    raw,
    read_replies,
    rpc,
    scripted,
)
from test_start_support import agentwall_start

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

POLICY = """\
version: "2"
default_action: deny
methods:
  sampling/createMessage: deny
tools:
  - {name: echo, action: allow}
"""

JSON = [("content-type", "application/json")]
TOOLS = [
    {"name": "echo", "inputSchema": {"type": "object"}},
    {"name": "run_command", "inputSchema": {"type": "object"}},
]
SSE = [("content-type", "text/event-stream")]
Answer = tuple[int, list[tuple[str, str]], bytes]


class Script:
    """The upstream's behaviour, chosen by the called tool's name."""

    def __init__(self) -> None:
        self.sessions = 0
        self.lock = threading.Lock()
        # The id of the last request whose SSE stream closed unanswered (the
        # 2025-11-25 polling pattern): a resumed GET stream answers it.
        self.owed: Any = None
        self.owed_result: Any = None

    def __call__(self, req: h11.Request, body: bytes) -> Answer:
        if req.method == b"GET":
            return self.resumed_stream()
        if req.method == b"DELETE":
            return 200, [], b""
        msg = json.loads(body)
        if isinstance(msg, list) or "id" not in msg or "method" not in msg:
            return 202, [], b""
        rpc_id, method = msg["id"], msg["method"]
        if method == "tools/list":
            self.owed, self.owed_result = rpc_id, {"tools": TOOLS}
            return 200, SSE, b"id: ev-1\ndata:\n\n"
        if method == "initialize":
            with self.lock:
                self.sessions += 1
                sid = f"issued-{self.sessions}"
            result = {"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {}}
            reply = {"jsonrpc": "2.0", "id": rpc_id, "result": result}
            return 200, [*JSON, ("mcp-session-id", sid)], json.dumps(reply).encode()
        real = {"jsonrpc": "2.0", "id": rpc_id, "result": {"content": [], "ok": True}}
        mode = msg.get("params", {}).get("arguments", {}).get("mode", "plain")
        foreign = {"jsonrpc": "2.0", "id": "never-sent", "result": {"forged": True}}
        note = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info"}}
        if mode == "plain":
            # Pretty-printed: the agent must receive our compact encoding.
            return 200, JSON, json.dumps(real, indent=2).encode()
        if mode == "foreign-json":
            return 200, JSON, json.dumps(foreign).encode()
        if mode == "twice-json":
            return 200, JSON, json.dumps([real, real]).encode()
        if mode == "foreign-sse":
            return 200, SSE, sse(foreign, real)
        if mode == "notification-json":
            return 200, JSON, json.dumps([note, real]).encode()
        if mode == "not-json":
            return 200, [("content-type", "text/html")], b"<html>oops</html>"
        if mode == "json-error-400":
            err = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "bad"}}
            return 400, JSON, json.dumps(err, indent=1).encode()
        if mode == "ambiguous-400":
            return 400, JSON, b'{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"a"},"id":3}'
        if mode == "text-500":
            return 500, [("content-type", "text/plain")], b"upstream diagnostic"
        if mode == "two-content-types":
            return 200, [*JSON, ("content-type", "text/html")], json.dumps(real).encode()
        if mode == "poll":
            self.owed, self.owed_result = rpc_id, {"late": True}
            return 200, SSE, b"id: ev-1\ndata:\n\n"
        raise AssertionError(mode)

    def resumed_stream(self) -> Answer:
        owed = {"jsonrpc": "2.0", "id": self.owed, "result": self.owed_result}
        foreign = {"jsonrpc": "2.0", "id": "never-sent", "result": {"forged": True}}
        return 200, SSE, sse(foreign, owed)


def sse(*messages: Any) -> bytes:
    return b"".join(
        b"id: e%d\nevent: message\ndata: %s\n\n" % (i, json.dumps(m).encode())
        for i, m in enumerate(messages)
    )


def call(mode: str, rpc_id: int | str = 1) -> str:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": rpc_id,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"mode": mode}},
        }
    )


def sse_messages(body: bytes) -> list[Any]:
    return [
        json.loads(line[5:])
        for line in body.decode().splitlines()
        if line.startswith("data:") and line[5:].strip()
    ]


def audit_entries(log_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptedUpstream]:
    with scripted(Script()) as up:
        yield up


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, upstream: ScriptedUpstream
) -> Iterator[tuple[int, Path]]:
    tmp = tmp_path_factory.mktemp("relay")
    with agentwall_start(tmp, upstream.url, "--workers", "0", policy=POLICY) as (url, _p, log):
        yield port_of(url), log


def test_json_answer_is_our_reencoding(proxy: tuple[int, Path]) -> None:
    port, _ = proxy
    (reply,), _ = raw(port, post(call("plain")))
    assert reply[0] == 200
    assert reply[1]["content-type"] == "application/json"
    assert reply[2] == b'{"jsonrpc":"2.0","id":1,"result":{"content":[],"ok":true}}'


def test_json_answer_to_an_id_never_sent_is_dropped_and_audited(proxy: tuple[int, Path]) -> None:
    port, log = proxy
    (reply,), _ = raw(port, post(call("foreign-json", 41)))
    assert b"never-sent" not in reply[2]
    assert b"forged" not in reply[2]
    answer = rpc(reply)
    assert answer["id"] == 41
    assert answer["error"]["code"] == -32603
    drops = [e for e in audit_entries(log) if e["event"] == "error" and e.get("rpc_id")]
    assert drops[-1]["rpc_id"] == "never-sent"
    assert drops[-1]["detail"] == {"direction": "server", "action": "drop"}


def test_a_second_answer_to_the_same_id_is_dropped(proxy: tuple[int, Path]) -> None:
    port, _ = proxy
    (reply,), _ = raw(port, post(call("twice-json", 42)))
    assert rpc(reply) == [{"jsonrpc": "2.0", "id": 42, "result": {"content": [], "ok": True}}]


def test_sse_answer_to_an_id_never_sent_is_dropped(proxy: tuple[int, Path]) -> None:
    port, _ = proxy
    (reply,), _ = raw(port, post(call("foreign-sse", 43)))
    assert reply[1]["content-type"] == "text/event-stream"
    assert [m["id"] for m in sse_messages(reply[2])] == [43]
    assert b"never-sent" not in reply[2]
    assert b"id: e1\n" in reply[2]  # the event's id survives re-encoding


def test_server_notification_in_a_json_body_is_judged_and_relayed(
    proxy: tuple[int, Path],
) -> None:
    port, log = proxy
    (reply,), _ = raw(port, post(call("notification-json", 44)))
    methods = [m.get("method") for m in rpc(reply)]
    assert methods == ["notifications/message", None]
    judged = [
        e
        for e in audit_entries(log)
        if e["event"] == "decision" and e.get("method") == "notifications/message"
    ]
    assert judged
    assert judged[-1]["detail"] == {"origin": "server"}


@pytest.mark.parametrize("mode", ["not-json", "two-content-types"])
def test_a_2xx_body_that_is_not_json_rpc_fails_closed(proxy: tuple[int, Path], mode: str) -> None:
    port, _ = proxy
    (reply,), _ = raw(port, post(call(mode, 45)))
    if mode == "two-content-types":
        # Judged as JSON, sent with exactly one Content-Type.
        assert reply[0] == 200
        assert reply[1]["content-type"] == "application/json"
        assert rpc(reply)["id"] == 45
        return
    assert reply[0] == 502
    assert b"oops" not in reply[2]
    assert rpc(reply)["error"]["code"] == -32603
    assert rpc(reply)["id"] == 45


def test_error_status_bodies(proxy: tuple[int, Path]) -> None:
    port, _ = proxy
    (reply,), _ = raw(port, post(call("json-error-400", 46)))
    assert reply[0] == 400
    # The upstream's error about the request as a whole, re-encoded.
    assert reply[2] == b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"bad"}}'
    (reply,), _ = raw(port, post(call("ambiguous-400", 47)))
    assert reply[0] == 400
    assert rpc(reply)["error"]["code"] == -32603
    assert rpc(reply)["id"] == 47
    (reply,), _ = raw(port, post(call("text-500", 48)))
    # A diagnostic text no MCP client reads as a message passes as it is.
    assert reply[0] == 500
    assert reply[2] == b"upstream diagnostic"


def test_resumed_get_stream_delivers_only_answers_still_owed(proxy: tuple[int, Path]) -> None:
    port, _ = proxy
    init = json.dumps(
        {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "x"}}
    )
    (reply,), _ = raw(port, post(init))
    sid = reply[1]["mcp-session-id"]
    headers = {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(post(call("poll", 77), headers=headers))
        (reply,), _ = read_replies(sock, 1, probe_close=False)
        assert sse_messages(reply[2]) == []  # closed unanswered: the agent will poll
        get = (
            f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
            f"Mcp-Session-Id: {sid}\r\nMCP-Protocol-Version: 2025-11-25\r\n"
            f"Last-Event-ID: ev-1\r\n\r\n"
        ).encode()
        sock.sendall(get)
        (reply,), _ = read_replies(sock, 1, probe_close=False)
    assert [m["id"] for m in sse_messages(reply[2])] == [77]
    assert b"never-sent" not in reply[2]
    # Once delivered, the answer is no longer owed.
    (reply,), _ = raw(port, get)
    assert sse_messages(reply[2]) == []
    # A tools/list answer delivered on the resumed stream is filtered too.
    listing = json.dumps({"jsonrpc": "2.0", "id": 78, "method": "tools/list"})
    (reply,), _ = raw(port, post(listing, headers=headers))
    assert sse_messages(reply[2]) == []
    (reply,), _ = raw(port, get)
    (answer,) = sse_messages(reply[2])
    assert answer["id"] == 78
    assert [t["name"] for t in answer["result"]["tools"]] == ["echo"]


RATE_POLICY = """\
version: "2"
default_action: deny
session: {max_calls_per_second: 0.01, burst: 2}
tools:
  - {name: echo, action: allow}
"""


def test_rate_limits_key_on_issued_sessions_not_made_up_ones(tmp_path: Path) -> None:
    with (
        scripted(Script()) as up,
        agentwall_start(tmp_path, up.url, "--workers", "1", policy=RATE_POLICY) as (url, _p, log),
    ):
        port = port_of(url)

        def limited(session_id: str | None, rpc_id: int) -> bool:
            headers = {"Mcp-Session-Id": session_id} if session_id else {}
            (reply,), _ = raw(port, post(call("plain", rpc_id), headers=headers))
            return "error" in rpc(reply) and rpc(reply)["error"]["code"] == -32029

        init = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}})
        (reply,), _ = raw(port, post(init))
        issued = reply[1]["mcp-session-id"]
        # The issued session has its own bucket (burst 2).
        assert [limited(issued, i) for i in (1, 2, 3)] == [False, False, True]
        # Made-up ids all share the peer's bucket: a fresh id buys nothing.
        assert [limited(f"fresh-{i}", 10 + i) for i in range(3)] == [False, False, True]
        assert limited(None, 20)
        entries = [e for e in audit_entries(log) if e["event"] == "decision"]
        sessions = {e["session"] for e in entries if e.get("method") == "tools/call"}
        assert sessions == {issued, "peer:127.0.0.1"}
        # After DELETE the id is no longer an issued session.
        delete = (
            f"DELETE /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nMcp-Session-Id: {issued}\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
        (reply,), _ = raw(port, delete)
        assert limited(issued, 30)
