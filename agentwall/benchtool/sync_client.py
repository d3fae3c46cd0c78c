"""Blocking one-session clients for pytest-benchmark round trips.

pytest-benchmark times a synchronous function, so the e2e benchmarks use
these: the same request bodies (``workload``) and the same response parser
(``channels``) as the load generator, on a blocking socket or pipe.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Sequence
from typing import IO, Any

import orjson

from agentwall.benchtool import workload as wl
from agentwall.benchtool.channels import ChannelError, ResponseParser, child_env, decode_body


class SyncHttpSession:
    """One MCP session over one keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int, path: str = "/mcp", timeout: float = 30.0) -> None:
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._parser = ResponseParser()
        self._pending: list[tuple[int, dict[bytes, bytes], bytes]] = []
        self._head = (
            f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
            "content-type: application/json\r\naccept: application/json, text/event-stream\r\n"
        ).encode()
        self.rpc_id = 0
        status, message, headers = self._exchange(wl.Kind("init", "list", 0, wl.INITIALIZE).body(0))
        if status != 200 or not isinstance(message, dict) or "result" not in message:
            raise ChannelError(f"initialize failed: HTTP {status}: {str(message)[:200]}")
        sid = headers.get(b"mcp-session-id")
        if sid is not None:
            self._head += b"mcp-session-id: " + sid + b"\r\n"
        self._head += b"mcp-protocol-version: " + wl.PROTOCOL_VERSION.encode() + b"\r\n"
        status, _, _ = self._exchange(wl.INITIALIZED_NOTIFICATION)
        if status not in (200, 202, 204):
            raise ChannelError(f"notifications/initialized answered with HTTP {status}")

    def _exchange(self, body: bytes) -> tuple[int, Any, dict[bytes, bytes]]:
        self._sock.sendall(self._head + b"content-length: %d\r\n\r\n" % len(body) + body)
        while not self._pending:
            data = self._sock.recv(262144)
            if not data:
                raise ChannelError("connection closed")
            self._pending.extend(self._parser.feed(data))
        status, headers, raw = self._pending.pop(0)
        message, _ = decode_body(status, headers, raw)
        return status, message, headers

    def call(self, kind: wl.Kind, tag: bytes = b"b") -> tuple[int, Any]:
        """Send one request of ``kind`` and return (HTTP status, JSON-RPC response)."""
        self.rpc_id += 1
        status, message, _ = self._exchange(kind.body(self.rpc_id, tag))
        return status, message

    def close(self) -> None:
        self._sock.close()


class SyncStdioSession:
    """One MCP session with a subprocess over its pipes."""

    def __init__(
        self,
        argv: Sequence[str],
        stderr: IO[bytes] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self._proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr if stderr is not None else subprocess.DEVNULL,
            env=child_env(env),
        )
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._in = self._proc.stdin
        self._out = self._proc.stdout
        self.rpc_id = 0
        message = self._exchange(wl.Kind("init", "list", 0, wl.INITIALIZE).body(0))
        if not isinstance(message, dict) or "result" not in message:
            raise ChannelError(f"initialize failed: {str(message)[:200]}")
        self._in.write(wl.INITIALIZED_NOTIFICATION + b"\n")
        self._in.flush()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _exchange(self, body: bytes) -> Any:
        self._in.write(body + b"\n")
        self._in.flush()
        while True:
            line = self._out.readline()
            if not line:
                raise ChannelError(f"process exited ({self._proc.poll()})")
            message = orjson.loads(line)
            if isinstance(message, dict) and "method" not in message:
                return message

    def call(self, kind: wl.Kind, tag: bytes = b"b") -> tuple[int, Any]:
        self.rpc_id += 1
        return 200, self._exchange(kind.body(self.rpc_id, tag))

    def close(self, grace: float = 10.0) -> int:
        """EOF on stdin, then SIGTERM, then SIGKILL; returns the exit code."""
        self._in.close()
        try:
            try:
                return self._proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._proc.terminate()
                try:
                    return self._proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    return self._proc.wait()
        finally:
            self._out.close()
