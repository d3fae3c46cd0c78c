"""Harness for the red-team tests: a host that drives the real ``agentwall
wrap`` over real pipes, with a real (hostile or SDK) MCP server subprocess
behind it.  Every wait is bounded."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
EVIL = str(HERE / "evil_server.py")
SDK_SERVER = str(HERE.parent / "io" / "test_wrap_servers.py")
KEY_HEX = "ab" * 32

POLICY = """\
version: "2"
default_action: deny
tools:
  - name: echo
    action: allow
    parameters:
      - {name: text, type: string, max_length: 100000}
      - {name: path, type: string, within: ["/workspace"]}
      - {name: n, type: integer, maximum: 10}
  - {name: run_command, action: deny}
"""


class Host:
    """Plays the agent host: talks to ``agentwall wrap`` over real pipes."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
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

    def send(self, message: Any) -> None:
        self.send_raw(json.dumps(message).encode() + b"\n")

    def call(self, rpc_id: Any, name: str, arguments: dict[str, Any]) -> None:
        self.send(
            {
                "jsonrpc": "2.0",
                "id": rpc_id,
                "method": "tools/call",
                "params": {"name": name, "arguments": arguments},
            }
        )

    def recv(self, timeout: float = 60.0) -> Any:
        line = self.lines.get(timeout=timeout)
        assert line, f"wrap closed its stdout; stderr: {bytes(self.stderr)!r}"
        return json.loads(line)

    def recv_until(
        self, done: Callable[[list[Any]], bool], timeout: float = 60.0, settle: float = 0.5
    ) -> list[Any]:
        """Everything that arrives until ``done(messages so far)`` holds, then
        whatever follows within ``settle`` seconds of silence.  Waiting for
        what a test expects, rather than for a fixed quiet spell, keeps a
        loaded host from cutting a reply off."""
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while not done(out):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; got {out!r}; stderr: {bytes(self.stderr)!r}"
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            assert line, f"wrap closed its stdout; got {out!r}; stderr: {bytes(self.stderr)!r}"
            out.append(json.loads(line))
        return out + self.recv_all(timeout=settle)

    def recv_all(self, timeout: float) -> list[Any]:
        """Everything that arrives until ``timeout`` seconds pass in silence."""
        out: list[Any] = []
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                return out
            if not line:
                return out
            out.append(json.loads(line))

    def initialize(self) -> Any:
        self.send(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {"roots": {}},
                    "clientInfo": {"name": "red-team", "version": "1"},
                },
            }
        )
        reply = self.recv()
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return reply

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for thread in self._threads:
            thread.join(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


class Wrapped:
    """One wrap session: the host, the files, and what the upstream received."""

    def __init__(self, tmp: Path, host: Host) -> None:
        self.tmp = tmp
        self.host = host

    @property
    def upstream_lines(self) -> list[bytes]:
        path = self.tmp / "upstream.log"
        return path.read_bytes().splitlines() if path.exists() else []

    def upstream_messages(self) -> list[Any]:
        return [json.loads(line) for line in self.upstream_lines if line.strip()]

    def audit_entries(self) -> list[dict[str, Any]]:
        path = self.tmp / "audit.log"
        return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]

    def verify_log(self) -> None:
        from agentwall.audit.keys import read_key_file
        from agentwall.audit.verify import verify_files

        outcome = verify_files([self.tmp / "audit.log"], [read_key_file(self.tmp / "audit.key")])
        assert outcome.valid, outcome.report

    def finish(self) -> int:
        self.host.close_stdin()
        return self.host.wait()


def wrap_argv(tmp: Path, server: list[str], *extra: str, policy: str | None = POLICY) -> list[str]:
    key = tmp / "audit.key"
    key.write_text(KEY_HEX + "\n")
    key.chmod(0o600)
    args = [sys.executable, "-m", "agentwall", "wrap"]
    if policy is not None:
        (tmp / "policy.yaml").write_text(policy)
        args += ["--policy", str(tmp / "policy.yaml")]
    return [
        *args,
        "--log-path", str(tmp / "audit.log"),
        "--audit-key-file", str(key),
        # Long enough for a Python server to exit after EOF on a loaded host
        # (a 1 s grace escalated to SIGTERM there: exit 143).
        "--grace-period", "10",
        *extra,
        "--",
        *server,
    ]  # fmt: skip


@pytest.fixture
def wrapped(tmp_path: Path) -> Iterator[Any]:
    """``wrapped(mode, *extra, policy=...)`` starts wrap around the evil server."""
    sessions: list[Wrapped] = []

    def start(mode: str = "echo", *extra: str, policy: str | None = POLICY) -> Wrapped:
        env = {**os.environ, "EVIL_LOG": str(tmp_path / "upstream.log")}
        host = Host(wrap_argv(tmp_path, [sys.executable, EVIL, mode], *extra, policy=policy), env)
        session = Wrapped(tmp_path, host)
        sessions.append(session)
        return session

    yield start
    for session in sessions:
        session.host.kill()
