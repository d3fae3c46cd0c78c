"""MCP servers that the wrap tests run as real subprocesses, and a host
harness that drives ``agentwall wrap`` over real pipes (no tests here).

``python tests/io/test_wrap_servers.py sdk``: a server built with the official
SDK (``MCPServer``), with tools that stream progress, ask the client for a
sampling completion and for its roots, and crash mid-call.

``python tests/io/test_wrap_servers.py raw MODE``: a hand-written stdio loop
that misbehaves on purpose (garbage on stdout, oversize lines, a partial line
at exit, a flood, ignoring SIGTERM), for the hostile-framing tests.
"""

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def sdk_server() -> None:
    # Imported here so the raw servers start fast.  (No `from __future__
    # import annotations` in this file: the SDK reads the tools' annotations.)
    import mcp_types as types
    from mcp.server.mcpserver import Context, MCPServer

    server = MCPServer(name="wrap-test-server", version="1.0", log_level="WARNING")

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def read_file(path: str) -> str:
        """Pretend to read a file."""
        return f"contents of {path}"

    @server.tool()
    def run_command(command: str) -> str:
        """A tool the tests' policy denies."""
        return f"ran {command}"

    @server.tool()
    async def progress(steps: int, ctx: Context) -> str:
        """Report progress `steps` times, then answer."""
        for i in range(steps):
            await ctx.report_progress(i + 1, steps, f"step {i + 1}")
        return f"done after {steps} steps"

    @server.tool()
    async def ask_model(prompt: str, ctx: Context) -> str:
        """Ask the client for a sampling completion (server -> client request)."""
        result = await ctx.session.create_message(
            messages=[
                types.SamplingMessage(
                    role="user", content=types.TextContent(type="text", text=prompt)
                )
            ],
            max_tokens=16,
        )
        content = result.content
        return f"model said: {getattr(content, 'text', content)}"

    @server.tool()
    async def client_roots(ctx: Context) -> str:
        """Ask the client for its roots (server -> client request)."""
        result = await ctx.session.list_roots()
        return ",".join(str(root.uri) for root in result.roots)

    @server.tool()
    def crash() -> str:
        """Die in the middle of the call."""
        sys.stderr.write("wrap-test-server: crashing on purpose\n")
        sys.stderr.flush()
        os._exit(3)

    server.run("stdio")


def _answer(msg: dict[str, Any], mode: str, out: Any) -> dict[str, Any] | None:
    rpc_id = msg.get("id")
    method = msg.get("method")
    if rpc_id is None or method is None:
        return None
    if method == "initialize":
        result: Any = {
            "protocolVersion": msg["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": f"raw-{mode}", "version": "1"},
        }
    elif method == "tools/list":
        names = ("echo", "big", "run_command")
        result = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in names]}
    elif method == "tools/call":
        name = msg["params"]["name"]
        if mode == "interleave":
            out.write(b"this is not JSON\n{not json either}\n\n[1,2\n")
        if name == "crash":
            sys.stderr.write("raw server: crashing on purpose\n")
            sys.stderr.flush()
            os._exit(3)
        if name == "ask":
            # A server -> client request before the answer (not awaited).
            ask = {"jsonrpc": "2.0", "id": "srv-1", "method": "sampling/createMessage",
                   "params": {"messages": [], "maxTokens": 5}}  # fmt: skip
            out.write(json.dumps(ask).encode() + b"\n")
        if name == "big":
            size = int(msg["params"]["arguments"]["size"])
            result = {"content": [{"type": "text", "text": "y" * size}]}
        elif name == "exit-partial":
            out.write(b'{"jsonrpc":"2.0","id":' + json.dumps(rpc_id).encode() + b',"res')
            out.flush()
            os._exit(0)
        else:
            result = {"content": [{"type": "text", "text": json.dumps(msg["params"])}]}
    else:
        return {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": -32601, "message": method}}
    return {"jsonrpc": "2.0", "id": rpc_id, "result": result}


def raw_server(mode: str) -> None:
    """Answers initialize, tools/list and tools/call; ``mode`` says how to
    misbehave."""
    out = sys.stdout.buffer
    stdin = sys.stdin.buffer
    info = os.environ.get("WRAP_TEST_INFO")
    if info:
        with open(info + ".tmp", "w") as f:
            json.dump(
                {
                    "pid": os.getpid(),
                    "pgid": os.getpgid(0),
                    "cwd": os.getcwd(),
                    "marker": os.environ.get("WRAP_TEST_MARKER"),
                },
                f,
            )
        os.rename(info + ".tmp", info)
    if mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "fail-start":
        sys.stderr.write("wrap-test-server: cannot open the database: no such file\n")
        sys.exit(3)
    if mode == "flood":
        # 24 MiB of garbage without a newline before anything valid.
        chunk = b"x" * (1 << 20)
        for _ in range(24):
            out.write(chunk)
        out.write(b"\n")
        out.flush()
    for line in stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        if isinstance(msg, list):
            replies = [r for r in (_answer(m, mode, out) for m in msg) if r is not None]
            if replies:
                out.write(json.dumps(replies).encode() + b"\n")
        else:
            reply = _answer(msg, mode, out)
            if reply is not None:
                out.write(json.dumps(reply).encode() + b"\n")
        out.flush()
    if mode == "ignore-term":
        # Ignore stdin EOF too: only SIGKILL stops this one.
        while True:
            time.sleep(1)


if __name__ == "__main__":
    if sys.argv[1] == "sdk":
        sdk_server()
    else:
        raw_server(sys.argv[2])


# --- the host side -------------------------------------------------------------------

HERE = str(Path(__file__).resolve())
KEY_HEX = "cd" * 32


def wrap_argv(tmp: Path, *extra: str, server: list[str] | None = None) -> list[str]:
    key = tmp / "audit.key"
    if not key.exists():
        key.write_text(KEY_HEX + "\n")
        key.chmod(0o600)
    policy = tmp / "policy.yaml"
    if not policy.exists():
        policy.write_text(RAW_POLICY)
    return [
        sys.executable, "-m", "agentwall", "wrap",
        "--policy", str(policy),
        "--log-path", str(tmp / "audit.log"),
        "--audit-key-file", str(key),
        # How long wrap waits for the server to exit before escalating.  On a
        # loaded 2-core CI host a Python server can take over a second just
        # to start or to exit after EOF, and a 1 s grace killed it there
        # (exit 143).  Tests of the escalation itself pass their own.
        "--grace-period", "10",
        *extra,
        "--",
        *(server if server is not None else [sys.executable, HERE, "raw", "plain"]),
    ]  # fmt: skip


RAW_POLICY = """\
version: "2"
default_action: deny
tools:
  - {name: echo, action: allow}
  - {name: big, action: allow}
  - {name: crash, action: allow}
  - {name: exit-partial, action: allow}
  - {name: ask, action: allow}
  - {name: run_command, action: deny}
"""


class Host:
    """Plays the agent host: talks to ``agentwall wrap`` over real pipes."""

    def __init__(self, argv: list[str], **popen: Any) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen
        )
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.stderr = bytearray()
        self._threads = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(b"")

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for chunk in iter(lambda: self.proc.stderr.read1(65536), b""):  # type: ignore[union-attr]
            self.stderr += chunk

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(json.dumps(message).encode() + b"\n")

    def request(self, rpc_id: Any, method: str, params: dict[str, Any] | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rpc_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    def call(self, rpc_id: Any, name: str, arguments: dict[str, Any]) -> None:
        self.request(rpc_id, "tools/call", {"name": name, "arguments": arguments})

    def recv(self, timeout: float = 60.0) -> dict[str, Any]:
        line = self.lines.get(timeout=timeout)
        assert line, f"wrap closed its stdout; stderr: {bytes(self.stderr)!r}"
        value: dict[str, Any] = json.loads(line)
        return value

    def initialize(self) -> dict[str, Any]:
        self.request(0, "initialize", {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test-host", "version": "1"},
        })  # fmt: skip
        reply = self.recv()
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return reply

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """Always called at the end: kills wrap if it still runs, closes pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for thread in self._threads:
            thread.join(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def alive(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait for a reaper that
    never comes in a container; it is not running)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_dead(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def wait_server(host: Host, info: Path) -> dict[str, Any]:
    """The test server's pid file, written once it runs under ``host``'s wrap.
    A start that fails kills wrap, so it cannot run on into later tests."""
    try:
        return wait_file(info)
    except BaseException:
        host.kill()
        raise


def wait_file(path: Path, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            value: dict[str, Any] = json.loads(path.read_text())
            return value
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")
