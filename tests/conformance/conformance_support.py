"""Helpers for tests/conformance (no tests here): the fixture server and
``agentwall start`` as real subprocesses, and a raw streamable-HTTP client for
the cases where a test must see the wire (status codes, SSE event ids, which
stream a message arrived on) rather than what the SDK makes of it."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "everything_server.py"
POLICY = HERE / "fixture-policy.yaml"
LEGACY = "2025-11-25"
MODERN = "2026-07-28"
ACCEPT = "application/json, text/event-stream"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], output: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode}:\n{output.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (loopback URL we built)
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return int(proc.returncode)


def spawn(cmd: list[str], output: Path) -> subprocess.Popen[bytes]:
    with output.open("wb") as sink:
        return subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=output.parent)


@contextlib.contextmanager
def fixture_server(tmp: Path) -> Iterator[str]:
    port = free_port()
    output = tmp / f"fixture-{port}.out"
    proc = spawn([sys.executable, str(FIXTURE), "--port", str(port)], output)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, output)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop(proc)


@dataclass
class Proxy:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    output: Path

    @property
    def base(self) -> str:
        return self.url.rsplit("/", 1)[0]

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.base + "/metrics", timeout=10) as resp:  # noqa: S310
            for line in resp.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise KeyError(name)

    def decisions(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") == "decision":
                    entries.append(entry)
        return entries


@contextlib.contextmanager
def agentwall(
    tmp: Path, upstream: str, *args: str, policy: Path = POLICY, workers: int = 1
) -> Iterator[Proxy]:
    port = free_port()
    log_path = tmp / f"audit-{port}.log"
    output = tmp / f"agentwall-{port}.out"
    cmd = [sys.executable, "-m", "agentwall", "start", "--listen", f"127.0.0.1:{port}"]
    cmd += ["--mcp-url", upstream, "--policy", str(policy), "--log-path", str(log_path)]
    cmd += ["--workers", str(workers), *args]
    proc = spawn(cmd, output)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc, output)
        yield Proxy(f"http://127.0.0.1:{port}/mcp", proc, log_path, output)
    finally:
        stop(proc)


# -- a raw streamable-HTTP client ---------------------------------------------------------


@dataclass
class SseEvent:
    id: str | None = None
    event: str | None = None
    data: str = ""
    retry: int | None = None

    @property
    def message(self) -> dict[str, Any] | None:
        return json.loads(self.data) if self.data else None


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    events: list[SseEvent] = field(default_factory=list)

    @property
    def messages(self) -> list[dict[str, Any]]:
        if self.events:
            return [m for e in self.events if (m := e.message) is not None]
        if self.body and self.headers.get("content-type", "").startswith("application/json"):
            decoded = json.loads(self.body)
            return decoded if isinstance(decoded, list) else [decoded]
        return []

    def answer(self, rpc_id: object) -> dict[str, Any]:
        for message in self.messages:
            if message.get("id") == rpc_id and ("result" in message or "error" in message):
                return message
        raise AssertionError(
            f"no answer to {rpc_id!r} in {self.status} {self.body!r} {self.events}"
        )


def read_events(
    resp: http.client.HTTPResponse,
    *,
    until: Callable[[SseEvent], bool] | None = None,
    timeout: float = 10.0,
) -> list[SseEvent]:
    """SSE events from resp until the stream ends or ``until(event)`` holds
    (then stop, leaving the stream open). Raises TimeoutError past timeout."""
    deadline = time.monotonic() + timeout
    events: list[SseEvent] = []
    current = SseEvent()
    seen_field = False
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"SSE stream quiet for {timeout}s; events so far: {events}")
        try:
            raw = resp.readline()
        except TimeoutError as exc:
            raise TimeoutError(f"SSE stream quiet; events so far: {events}") from exc
        if not raw:
            return events
        line = raw.decode().rstrip("\r\n")
        if not line:
            if seen_field:
                events.append(current)
                if until is not None and until(current):
                    return events
            current, seen_field = SseEvent(), False
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        seen_field = True
        if name == "data":
            current.data = value if not current.data else current.data + "\n" + value
        elif name == "id":
            current.id = value
        elif name == "event":
            current.event = value
        elif name == "retry":
            current.retry = int(value)


class Raw:
    """One HTTP/1.1 request per connection, headers exactly as given."""

    def __init__(self, url: str, *, timeout: float = 15.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80
        self.path = parsed.path or "/"
        self.timeout = timeout

    def _headers(self, extra: dict[str, str] | None, session: str | None) -> dict[str, str]:
        headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
        if session is not None:
            headers["Mcp-Session-Id"] = session
            headers["MCP-Protocol-Version"] = LEGACY
        headers.update(extra or {})
        return headers

    def open(
        self,
        method: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        session: str | None = None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body))
        hdrs = self._headers(headers, session)
        if body is None:
            hdrs.pop("Content-Type", None)
        conn.request(method, self.path, body=data, headers=hdrs)
        return conn, conn.getresponse()

    def send(
        self,
        method: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        session: str | None = None,
    ) -> Reply:
        conn, resp = self.open(method, body, headers=headers, session=session)
        try:
            reply_headers = {k.lower(): v for k, v in resp.getheaders()}
            if reply_headers.get("content-type", "").startswith("text/event-stream"):
                return Reply(resp.status, reply_headers, events=read_events(resp))
            return Reply(resp.status, reply_headers, body=resp.read())
        finally:
            conn.close()

    def post(self, message: Any, **kwargs: Any) -> Reply:
        return self.send("POST", message, **kwargs)

    def initialize(self, version: str = LEGACY) -> tuple[str, Reply]:
        """initialize + notifications/initialized; returns (session id, the
        initialize reply)."""
        reply = self.post(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": version,
                    "capabilities": {},
                    "clientInfo": {"name": "agentwall-conformance", "version": "1"},
                },
            }
        )
        assert reply.status == 200, reply
        session = reply.headers["mcp-session-id"]
        done = self.post(
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            session=session,
        )
        assert done.status == 202, done
        return session, reply


def modern_meta() -> dict[str, Any]:
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "agentwall-conformance", "version": "1"},
    }


def modern_headers(method: str, name: str | None = None) -> dict[str, str]:
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    return headers
