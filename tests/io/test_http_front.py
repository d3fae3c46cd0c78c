"""Raw sockets against a real ``agentwall start``: every malformed or hostile case.

The proxy is a real subprocess (writer, workers, uvloop front-end).  Upstreams
are either the SDK server from the integration support module or a scripted
raw HTTP server run by the test (to see exactly what the proxy forwards, and
to be slow or absent on purpose).
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h11
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from test_start_support import agentwall_start, free_port, upstream_server

pytestmark = [pytest.mark.integration]

POLICY = """\
version: "2"
default_action: deny
tools:
  - name: echo
    action: allow
  - name: add
    action: allow
"""

Reply = tuple[int, dict[str, str], bytes]


# -- a raw client ---------------------------------------------------------------------------------


def raw(
    port: int, data: bytes, *, responses: int = 1, timeout: float = 15.0
) -> tuple[list[Reply], bool]:
    """Send raw bytes, read ``responses`` answers with h11; also report
    whether the server closed the connection afterwards."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_replies(sock, responses)


def read_replies(
    sock: socket.socket, responses: int, *, probe_close: bool = True
) -> tuple[list[Reply], bool]:
    conn = h11.Connection(h11.CLIENT)
    # h11 needs to believe it sent requests to parse responses.
    out: list[Reply] = []
    closed = False
    status = 0
    headers: dict[str, str] = {}
    body = b""
    for _ in range(responses):
        conn.send(
            h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "0")])
        )
        conn.send(h11.EndOfMessage())
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                conn.receive_data(data)
                if not data:
                    closed = True
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
                body = b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                out.append((status, headers, body))
                break
            elif isinstance(event, h11.ConnectionClosed):
                closed = True
                return out, closed
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            break
    if not closed and probe_close:
        # Did the server close after answering?  Wait briefly for EOF.
        sock.settimeout(0.5)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
    return out, closed


def post(body: bytes | str, *, headers: dict[str, str] | None = None, path: str = "/mcp") -> bytes:
    if isinstance(body, str):
        body = body.encode()
    hdrs = {
        "Host": "127.0.0.1",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "Content-Length": str(len(body)),
    }
    hdrs.update(headers or {})
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    return head.encode() + body


def rpc(reply: Reply) -> Any:
    return json.loads(reply[2])


def call(name: str, arguments: dict[str, Any] | None = None, rpc_id: int = 1) -> str:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": rpc_id,
            "method": "tools/call",
            "params": {"name": name, "arguments": arguments or {}},
        }
    )


# -- a scripted upstream --------------------------------------------------------------------------

Handler = Callable[[h11.Request, bytes], tuple[int, list[tuple[str, str]], bytes] | None]


class ScriptedUpstream:
    """A tiny threaded HTTP/1.1 server: ``handler`` returns (status, headers,
    body), or None to hang (never answer)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.seen: list[tuple[h11.Request, bytes]] = []
        self.stopping = False
        self.threads: list[threading.Thread] = []
        self.clients: list[socket.socket] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.clients.append(client)
            t = threading.Thread(target=self._serve, args=(client,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, client: socket.socket) -> None:
        conn = h11.Connection(h11.SERVER)
        req: h11.Request | None = None
        body = b""
        with contextlib.suppress(OSError, h11.ProtocolError):
            while not self.stopping:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = client.recv(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    req, body = event, b""
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert req is not None
                    self.seen.append((req, body))
                    answer = self.handler(req, body)
                    if answer is None:
                        while not self.stopping:
                            time.sleep(0.05)
                        return
                    status, headers, payload = answer
                    hdrs = [*headers, ("content-length", str(len(payload)))]
                    # One write per response: several small writes would meet
                    # Nagle and delayed ACK (40 ms stalls).
                    out = conn.send(h11.Response(status_code=status, headers=hdrs)) or b""
                    out += conn.send(h11.Data(data=payload)) or b""
                    out += conn.send(h11.EndOfMessage()) or b""
                    client.sendall(out)
                    conn.start_next_cycle()
                else:
                    return

    def close(self) -> None:
        """Stop every thread this server started: later tests fork (the
        evaluator pool refuses to fork while other threads exist).  close()
        alone does not wake a thread blocked in accept() or recv() on Linux;
        shutdown() does."""
        self.stopping = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for c in self.clients:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                c.close()
        self.acceptor.join(10)
        for t in self.threads:
            t.join(10)
        assert not self.acceptor.is_alive()
        assert not any(t.is_alive() for t in self.threads)


@contextlib.contextmanager
def scripted(handler: Handler) -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream(handler)
    try:
        yield up
    finally:
        up.close()


def json_answer(req: h11.Request, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """Answer every request (or batch) with a result echoing the params."""
    message = json.loads(body)
    if isinstance(message, list):
        out = [
            {"jsonrpc": "2.0", "id": m["id"], "result": {"echo": m.get("params")}}
            for m in message
            if "id" in m
        ]
        return 200, [("content-type", "application/json")], json.dumps(out).encode()
    if "id" not in message:
        return 202, [], b""
    result = {"jsonrpc": "2.0", "id": message["id"], "result": {"echo": message.get("params")}}
    return (
        200,
        [("content-type", "application/json"), ("mcp-session-id", "s-1")],
        json.dumps(result).encode(),
    )


def port_of(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("front")


@pytest.fixture(scope="module")
def echo_upstream() -> Iterator[ScriptedUpstream]:
    with scripted(json_answer) as up:
        yield up


@pytest.fixture(scope="module")
def proxy(tmp_module: Path, echo_upstream: ScriptedUpstream) -> Iterator[int]:
    with agentwall_start(
        tmp_module,
        echo_upstream.url,
        "--workers",
        "1",
        "--request-timeout",
        "1",
        "--idle-timeout",
        "2",
        "--max-body-bytes",
        "65536",
        "--upstream-timeout",
        "5",
        policy=POLICY,
    ) as (url, _proc, _log):
        yield port_of(url)


# -- malformed HTTP -------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_malformed_request_line_is_400_and_closes(proxy: int) -> None:
    (reply,), closed = raw(proxy, b"GARBAGE\r\n\r\n")
    assert reply[0] == 400
    assert rpc(reply)["error"]["code"] == -32600
    assert closed


@pytest.mark.timeout(60)
def test_oversize_head_is_431(proxy: int) -> None:
    (reply,), closed = raw(
        proxy, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"
    )
    assert reply[0] == 431
    assert closed


@pytest.mark.timeout(60)
def test_declared_oversize_body_is_413_before_reading_it(proxy: int) -> None:
    data = (
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 9999999\r\n\r\n"
    )
    (reply,), closed = raw(proxy, data)
    assert reply[0] == 413
    assert "65536" in rpc(reply)["error"]["message"]
    assert closed


@pytest.mark.timeout(60)
def test_chunked_oversize_body_is_413(proxy: int) -> None:
    chunk = b"x" * 40000
    data = (
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 2
    )
    (reply,), closed = raw(proxy, data)
    assert reply[0] == 413
    assert closed


@pytest.mark.timeout(60)
def test_slow_client_gets_408(proxy: int) -> None:
    (reply,), closed = raw(proxy, b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
    assert reply[0] == 408
    assert closed


@pytest.mark.timeout(60)
def test_slow_body_gets_408(proxy: int) -> None:
    data = (
        b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 50\r\n\r\n{"
    )
    (reply,), closed = raw(proxy, data)
    assert reply[0] == 408
    assert closed


@pytest.mark.timeout(60)
def test_idle_keep_alive_connection_is_closed(proxy: int) -> None:
    with socket.create_connection(("127.0.0.1", proxy), timeout=15) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        (reply,), closed = read_replies(sock, 1)
        assert reply[0] == 200
        assert not closed
        sock.settimeout(15)
        assert sock.recv(1) == b""  # closed by the idle timeout, without a response


@pytest.mark.timeout(60)
def test_pipelined_requests_are_answered_in_order(proxy: int) -> None:
    data = post(call("echo", {"text": "one"}, 1)) + post(call("echo", {"text": "two"}, 2))
    replies, _closed = raw(proxy, data, responses=2)
    assert [rpc(r)["id"] for r in replies] == [1, 2]
    assert rpc(replies[1])["result"]["echo"]["arguments"] == {"text": "two"}


@pytest.mark.timeout(60)
def test_http10_client_gets_a_closed_connection(proxy: int) -> None:
    with socket.create_connection(("127.0.0.1", proxy), timeout=15) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in head
    assert body == b"ok\n"


@pytest.mark.timeout(60)
def test_connection_close_is_honoured(proxy: int) -> None:
    (reply,), closed = raw(
        proxy, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    assert reply[0] == 200
    assert reply[1]["connection"] == "close"
    assert closed


@pytest.mark.timeout(60)
def test_head_request_gets_no_body(proxy: int) -> None:
    with socket.create_connection(("127.0.0.1", proxy), timeout=15) as sock:
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.3)
        data = sock.recv(65536)
    first, _, rest = data.partition(b"\r\n\r\n")
    assert b"content-length: 3" in first
    assert rest.startswith(b"HTTP/1.1 200 ")  # no body between the two answers


@pytest.mark.timeout(60)
def test_expect_100_continue(proxy: int) -> None:
    body = call("echo", {"text": "x"}, 12).encode()
    head = (
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", proxy), timeout=15) as sock:
        sock.sendall(head)
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        (reply,), _ = read_replies(sock, 1, probe_close=False)
    assert rpc(reply)["id"] == 12


@pytest.mark.timeout(60)
def test_unknown_path_and_method(proxy: int) -> None:
    (reply,), _ = raw(proxy, b"GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert reply[0] == 404
    (reply,), _ = raw(proxy, b"PUT /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n")
    assert reply[0] == 405
    assert "POST" in reply[1]["allow"]


# -- malformed JSON-RPC ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_invalid_json_is_32700(proxy: int) -> None:
    (reply,), closed = raw(proxy, post('{"jsonrpc": "2.0", "id": 1, "method": '))
    assert reply[0] == 400
    assert rpc(reply) == {"jsonrpc": "2.0", "id": None, "error": rpc(reply)["error"]}
    assert rpc(reply)["error"]["code"] == -32700
    assert not closed  # a JSON error does not cost the connection


@pytest.mark.timeout(60)
def test_invalid_utf8_is_32700(proxy: int) -> None:
    (reply,), _ = raw(proxy, post(b'{"jsonrpc":"2.0","id":1,"method":"\xff"}'))
    assert rpc(reply)["error"]["code"] == -32700


@pytest.mark.parametrize(
    "body",
    [
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list"}',
        '{"jsonrpc":"2.0","id":1,"method":"tools/call","result":{}}',
        '{"jsonrpc":"2.0","id":1,"method":42}',
        '{"jsonrpc":"1.0","id":1,"method":"ping"}',
        "[]",
    ],
)
@pytest.mark.timeout(60)
def test_ambiguous_json_rpc_is_32600(proxy: int, body: str) -> None:
    (reply,), _ = raw(proxy, post(body))
    assert reply[0] == 400
    assert rpc(reply)["error"]["code"] == -32600


@pytest.mark.parametrize(
    "params",
    ['{"name": 123, "arguments": {}}', '["echo", {}]', '{"name": "echo", "arguments": "x"}'],
)
@pytest.mark.timeout(60)
def test_params_mcp_does_not_allow_are_32602(proxy: int, params: str) -> None:
    body = '{"jsonrpc":"2.0","id":11,"method":"tools/call","params":' + params + "}"
    (reply,), closed = raw(proxy, post(body))
    assert reply[0] == 400
    assert rpc(reply)["id"] == 11
    assert rpc(reply)["error"]["code"] == -32602
    assert not closed


@pytest.mark.timeout(60)
def test_wrong_content_type_is_415(proxy: int) -> None:
    (reply,), _ = raw(
        proxy, post(call("echo", {"text": "x"}), headers={"Content-Type": "text/plain"})
    )
    assert reply[0] == 415


# -- MCP header rules -----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_foreign_origin_is_403(proxy: int) -> None:
    (reply,), _ = raw(
        proxy, post(call("echo", {"text": "x"}), headers={"Origin": "http://evil.example"})
    )
    assert reply[0] == 403
    assert rpc(reply)["id"] is None


@pytest.mark.timeout(60)
def test_rebound_host_is_403(proxy: int) -> None:
    (reply,), _ = raw(
        proxy, post(call("echo", {"text": "x"}), headers={"Host": "evil.example:8080"})
    )
    assert reply[0] == 403


@pytest.mark.timeout(60)
def test_mcp_name_that_lies_is_32020(proxy: int, echo_upstream: ScriptedUpstream) -> None:
    before = len(echo_upstream.seen)
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 5,
            "method": "tools/call",
            "params": {
                "name": "add",
                "arguments": {"a": 1, "b": 2},
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"},
            },
        }
    )
    headers = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
    (reply,), _ = raw(proxy, post(body, headers=headers))
    assert reply[0] == 400
    assert rpc(reply)["error"]["code"] == -32020
    assert rpc(reply)["id"] == 5
    assert len(echo_upstream.seen) == before


@pytest.mark.timeout(60)
def test_base64_mcp_name_is_decoded(proxy: int) -> None:
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 6,
            "method": "tools/call",
            "params": {
                "name": "echo",
                "arguments": {"text": "x"},
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"},
            },
        }
    )
    headers = {
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "=?base64?ZWNobw==?=",
    }
    (reply,), _ = raw(proxy, post(body, headers=headers))
    assert reply[0] == 200
    assert rpc(reply)["id"] == 6


@pytest.mark.timeout(60)
def test_unknown_protocol_version_is_32022(proxy: int) -> None:
    (reply,), _ = raw(
        proxy, post(call("echo", {"text": "x"}), headers={"MCP-Protocol-Version": "1999-01-01"})
    )
    assert reply[0] == 400
    assert rpc(reply)["error"]["code"] == -32022
    assert rpc(reply)["error"]["data"]["requested"] == "1999-01-01"


@pytest.mark.timeout(60)
def test_undecodable_param_header_is_32020(proxy: int) -> None:
    (reply,), _ = raw(
        proxy, post(call("echo", {"text": "x"}), headers={"Mcp-Param-Region": "=?base64?%%?="})
    )
    assert reply[0] == 400
    assert rpc(reply)["error"]["code"] == -32020


# -- what the upstream receives -------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_upstream_gets_our_encoding_and_no_credentials(
    proxy: int, echo_upstream: ScriptedUpstream
) -> None:
    body = (
        '{ "params" : {"arguments":{"text":"caf\\u00e9"}, "name":"echo"}, '
        '"method":"tools/call", "id":77, "jsonrpc":"2.0" }'
    )
    headers = {
        "Authorization": "Bearer agent-secret",
        "Cookie": "sid=1",
        "Mcp-Session-Id": "sess-42",
        "MCP-Protocol-Version": "2025-11-25",
        "Mcp-Param-Region": "eu-west1",
        "X-Trace": "t-1",
    }
    (reply,), _ = raw(proxy, post(body, headers=headers))
    assert reply[0] == 200
    assert rpc(reply)["id"] == 77
    assert reply[1]["mcp-session-id"] == "s-1"
    req, forwarded = next((r, b) for r, b in reversed(echo_upstream.seen) if b"77" in b)
    assert (
        forwarded
        == '{"jsonrpc":"2.0","id":77,"method":"tools/call",'
        '"params":{"arguments":{"text":"café"},"name":"echo"}}'.encode()
    )
    names = {k.decode().lower(): v.decode() for k, v in req.headers}
    assert "authorization" not in names
    assert "cookie" not in names
    assert names["mcp-session-id"] == "sess-42"
    assert names["mcp-protocol-version"] == "2025-11-25"
    assert names["mcp-param-region"] == "eu-west1"
    assert names["x-trace"] == "t-1"


# -- decisions ------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_denied_call_never_reaches_upstream_and_session_continues(
    proxy: int, echo_upstream: ScriptedUpstream
) -> None:
    before = len(echo_upstream.seen)
    data = post(call("rm_rf", {"path": "/"}, 9)) + post(call("echo", {"text": "after"}, 10))
    replies, closed = raw(proxy, data, responses=2)
    denied = rpc(replies[0])
    assert replies[0][0] == 200
    assert denied["id"] == 9
    assert denied["error"]["code"] == -32001
    assert denied["error"]["data"]["decision_id"]
    assert "rm_rf" not in json.dumps([b.decode() for _, b in echo_upstream.seen[before:]])
    assert rpc(replies[1])["id"] == 10
    assert not closed


@pytest.mark.timeout(60)
def test_denied_notification_is_403_without_id(proxy: int) -> None:
    body = '{"jsonrpc":"2.0","method":"notifications/evil","params":{}}'
    (reply,), _ = raw(proxy, post(body))
    assert reply[0] == 403
    assert rpc(reply)["id"] is None
    assert rpc(reply)["error"]["code"] == -32001


@pytest.mark.timeout(60)
def test_batch_is_judged_item_by_item(proxy: int, echo_upstream: ScriptedUpstream) -> None:
    batch = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "ok"}},
        },
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "rm_rf", "arguments": {}},
        },
        {"jsonrpc": "2.0", "id": 3, "method": 12},
        {"jsonrpc": "2.0", "method": "notifications/evil"},
    ]
    (reply,), _ = raw(proxy, post(json.dumps(batch)))
    assert reply[0] == 200
    answers = {a["id"]: a for a in rpc(reply)}
    assert answers[1]["result"]["echo"]["name"] == "echo"
    assert answers[2]["error"]["code"] == -32001
    assert answers[3]["error"]["code"] == -32600
    assert len(answers) == 3
    _req, forwarded = echo_upstream.seen[-1]
    assert [m["id"] for m in json.loads(forwarded)] == [1]


@pytest.mark.timeout(60)
def test_batch_where_the_version_has_none_is_400(proxy: int) -> None:
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "ping"}]
    (reply,), _ = raw(
        proxy, post(json.dumps(batch), headers={"MCP-Protocol-Version": "2025-06-18"})
    )
    assert reply[0] == 400
    assert rpc(reply)["error"]["code"] == -32600


# -- upstream faults ------------------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_upstream_down_is_502(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}/mcp"
    with agentwall_start(tmp_path, dead, "--workers", "0", policy=POLICY) as (url, _proc, _log):
        (reply,), _ = raw(port_of(url), post(call("echo", {"text": "x"}, 3)))
        assert reply[0] == 502
        assert rpc(reply)["id"] == 3
        assert rpc(reply)["error"]["code"] == -32004
        (ready,), _ = raw(port_of(url), b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert ready[0] == 503
        assert rpc(ready)["checks"]["upstream"] is False


@pytest.mark.timeout(90)
def test_slow_upstream_is_504(tmp_path: Path) -> None:
    with (
        scripted(lambda req, body: None) as silent,
        agentwall_start(
            tmp_path, silent.url, "--workers", "0", "--upstream-timeout", "0.5", policy=POLICY
        ) as (
            url,
            _proc,
            _log,
        ),
    ):
        (reply,), _ = raw(port_of(url), post(call("echo", {"text": "x"}, 4)))
        assert reply[0] == 504
        assert rpc(reply)["id"] == 4
        assert rpc(reply)["error"]["code"] == -32005


@pytest.mark.timeout(90)
def test_overload_gets_a_fast_503(tmp_path: Path) -> None:
    with (
        scripted(lambda req, body: None) as silent,
        agentwall_start(
            tmp_path,
            silent.url,
            "--workers",
            "0",
            "--max-inflight",
            "1",
            "--upstream-timeout",
            "20",
            policy=POLICY,
        ) as (url, _proc, _log),
    ):
        port = port_of(url)
        with socket.create_connection(("127.0.0.1", port), timeout=15) as held:
            held.sendall(post(call("echo", {"text": "hold"}, 1)))
            for _ in range(100):  # until the held call has reached the upstream
                if silent.seen:
                    break
                time.sleep(0.05)
            (reply,), _ = raw(port, post(call("echo", {"text": "x"}, 2)))
        assert reply[0] == 503
        assert reply[1]["retry-after"] == "1"
        assert rpc(reply)["error"]["code"] == -32006


@pytest.mark.timeout(120)
def test_sdk_upstream_sse_is_relayed(tmp_path: Path) -> None:
    """A raw initialize through the proxy to the SDK server: SSE framing,
    session header and X-Accel-Buffering are relayed."""
    with (
        upstream_server(tmp_path) as (upstream_url, _control),
        agentwall_start(tmp_path, upstream_url, "--workers", "0", policy=POLICY) as (
            url,
            _proc,
            _log,
        ),
    ):
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        }
        (reply,), _ = raw(port_of(url), post(json.dumps(init)))
    assert reply[0] == 200
    assert reply[1]["content-type"].startswith("text/event-stream")
    assert reply[1]["x-accel-buffering"] == "no"
    assert reply[1]["mcp-session-id"]
    data_lines = [line for line in reply[2].decode().splitlines() if line.startswith("data: {")]
    assert json.loads(data_lines[-1][6:])["result"]["protocolVersion"] == "2025-11-25"


# -- the GET stream and shutdown ----------------------------------------------------------


def sse_answer(req: h11.Request, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """GET: a server->client stream with an allowed notification, one the
    policy does not know (default deny) and a keep-alive comment."""
    if req.method == b"GET":
        allowed = {
            "jsonrpc": "2.0",
            "method": "notifications/message",
            "params": {"level": "info", "data": "hi"},
        }
        refused = {"jsonrpc": "2.0", "method": "notifications/evil", "params": {}}
        stream = (
            b": keep-alive\n\n"
            + b"id: 7\nevent: message\ndata: "
            + json.dumps(allowed).encode()
            + b"\n\n"
            + b"id: 8\nevent: message\ndata: "
            + json.dumps(refused).encode()
            + b"\n\n"
        )
        return 200, [("content-type", "text/event-stream")], stream
    return json_answer(req, body)


@pytest.mark.timeout(90)
def test_get_stream_forwards_last_event_id_and_judges_events(tmp_path: Path) -> None:
    with (
        scripted(sse_answer) as upstream,
        agentwall_start(tmp_path, upstream.url, "--workers", "0", policy=POLICY) as (
            url,
            _proc,
            log_path,
        ),
    ):
        request = (
            b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
            b"Mcp-Session-Id: s-9\r\nMCP-Protocol-Version: 2025-11-25\r\nLast-Event-ID: 6\r\n\r\n"
        )
        (reply,), _ = raw(port_of(url), request)
        req, _ = upstream.seen[-1]
        forwarded = {k.decode().lower(): v.decode() for k, v in req.headers}
    assert forwarded["last-event-id"] == "6"
    assert forwarded["mcp-session-id"] == "s-9"
    assert reply[0] == 200
    assert reply[1]["content-type"] == "text/event-stream"
    text = reply[2].decode()
    assert ": keep-alive" in text
    assert "notifications/message" in text
    assert "id: 7" in text
    assert "notifications/evil" not in text  # refused by the policy, never relayed
    entries = [
        json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")
    ]
    judged = {e["method"]: e["decision"] for e in entries if e.get("event") == "decision"}
    assert judged == {"notifications/message": "allow", "notifications/evil": "deny"}


@pytest.mark.timeout(90)
def test_sigterm_drains_the_call_in_flight(tmp_path: Path) -> None:
    import signal

    def slow(req: h11.Request, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        time.sleep(1.0)
        return json_answer(req, body)

    with (
        scripted(slow) as upstream,
        agentwall_start(tmp_path, upstream.url, "--workers", "1", policy=POLICY) as (
            url,
            proc,
            log_path,
        ),
    ):
        with socket.create_connection(("127.0.0.1", port_of(url)), timeout=30) as sock:
            sock.sendall(post(call("echo", {"text": "in flight"}, 21)))
            for _ in range(200):  # until the call has reached the upstream
                if upstream.seen:
                    break
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            (reply,), closed = read_replies(sock, 1)
        assert proc.wait(30) == 0
    assert rpc(reply)["result"]["echo"]["arguments"] == {"text": "in flight"}
    assert reply[1]["connection"] == "close"
    assert closed
    kinds = [
        json.loads(line)["event"]
        for line in log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    assert kinds[-1] == "proxy_stop"
    assert "decision" in kinds
