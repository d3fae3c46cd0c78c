"""Client channels for the load generator: one MCP session each.

``HttpChannel`` is a keep-alive HTTP/1.1 connection on a raw asyncio
Protocol (no HTTP library: the client must cost less than what it measures).
``StdioChannel`` owns a subprocess and speaks newline-delimited JSON-RPC over
its pipes.  Both deliver each JSON-RPC response to one callback, and both
offer ``request()`` for the slow set-up steps (initialize, warm-up).

``CallLoop`` is the hot path: one request in flight per channel, the next one
sent from the callback that received the previous response, each latency
taken with ``perf_counter_ns`` around exactly that exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from array import array
from collections.abc import Callable, Sequence
from time import perf_counter_ns as _now
from typing import IO, Any, Final, cast

import orjson

from agentwall.benchtool import workload as wl

Deliver = Callable[[int, Any], None]

MAX_RESPONSE: Final = 64 * 1024 * 1024


class ChannelError(Exception):
    """The peer closed, sent something unparseable, or never answered."""


class ResponseParser:
    """Incremental HTTP/1.1 response parser.

    Yields ``(status, headers, body)``; handles Content-Length and chunked
    bodies (SSE responses are chunked).  A body delimited by connection close
    is refused: a benchmark on keep-alive connections cannot use it.
    """

    __slots__ = ("_body", "_buf", "_chunked", "_head", "_length")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head: tuple[int, dict[bytes, bytes]] | None = None
        self._length = 0
        self._chunked = False
        self._body = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
        self._buf += data
        out: list[tuple[int, dict[bytes, bytes], bytes]] = []
        while True:
            item = self._next()
            if item is None:
                return out
            out.append(item)

    def _next(self) -> tuple[int, dict[bytes, bytes], bytes] | None:
        buf = self._buf
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 256 * 1024:
                    raise ChannelError("response head too large")
                return None
            lines = bytes(buf[:end]).split(b"\r\n")
            del buf[: end + 4]
            parts = lines[0].split(b" ", 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                raise ChannelError(f"malformed status line {lines[0][:80]!r}")
            try:
                status = int(parts[1])
            except ValueError:
                raise ChannelError(f"malformed status line {lines[0][:80]!r}") from None
            headers: dict[bytes, bytes] = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            self._head = (status, headers)
            self._chunked = headers.get(b"transfer-encoding", b"").lower() == b"chunked"
            if self._chunked:
                self._body = bytearray()
            elif b"content-length" in headers:
                self._length = int(headers[b"content-length"])
            elif status in (204, 304) or 100 <= status < 200:
                self._length = 0
            else:
                raise ChannelError("response without Content-Length or chunked encoding")
            if self._length > MAX_RESPONSE:
                raise ChannelError("response too large")
        status, headers = self._head
        if self._chunked:
            if not self._take_chunks():
                return None
            body = bytes(self._body)
        else:
            if len(buf) < self._length:
                return None
            body = bytes(buf[: self._length])
            del buf[: self._length]
        self._head = None
        return status, headers, body

    def _take_chunks(self) -> bool:
        buf = self._buf
        while True:
            eol = buf.find(b"\r\n")
            if eol < 0:
                return False
            try:
                size = int(bytes(buf[:eol]).split(b";", 1)[0], 16)
            except ValueError:
                raise ChannelError(f"bad chunk size {bytes(buf[:eol])[:40]!r}") from None
            if size == 0:
                if len(buf) < eol + 4:
                    return False
                if buf[eol + 2 : eol + 4] == b"\r\n":
                    del buf[: eol + 4]
                    return True
                end = buf.find(b"\r\n\r\n", eol + 2)  # trailers, then a blank line
                if end < 0:
                    return False
                del buf[: end + 4]
                return True
            if len(buf) < eol + 2 + size + 2:
                return False
            self._body += buf[eol + 2 : eol + 2 + size]
            del buf[: eol + 2 + size + 2]
            if len(self._body) > MAX_RESPONSE:
                raise ChannelError("response too large")


def decode_body(status: int, headers: dict[bytes, bytes], body: bytes) -> tuple[Any, int]:
    """The JSON-RPC response in a POST's answer, and how many other messages came with it."""
    if not body:
        return None, 0
    ctype = headers.get(b"content-type", b"")
    if ctype.startswith(b"text/event-stream"):
        messages = sse_messages(body)
        responses = [m for m in messages if isinstance(m, dict) and "method" not in m]
        return (responses[-1] if responses else None), len(messages) - len(responses)
    try:
        return orjson.loads(body), 0
    except orjson.JSONDecodeError:
        return None, 0


def sse_messages(body: bytes) -> list[Any]:
    """The JSON payloads of the ``data:`` fields in an SSE stream."""
    out: list[Any] = []
    for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if data and any(data):
            try:
                out.append(orjson.loads(b"\n".join(data)))
            except orjson.JSONDecodeError:
                out.append(None)
    return out


def classify(status: int, message: Any, rpc_id: int) -> str:
    """``ok``, ``rpc<code>``, ``http<status>[/rpc<code>]`` or ``bad``."""
    code = None
    if isinstance(message, dict):
        error = message.get("error")
        if isinstance(error, dict):
            code = error.get("code")
    if status != 200:
        return f"http{status}" if code is None else f"http{status}/rpc{code}"
    if not isinstance(message, dict) or message.get("id") != rpc_id:
        return "bad"
    if "result" in message:
        return "ok"
    return f"rpc{code}" if code is not None else "bad"


class Channel:
    """What ``CallLoop`` needs from a transport."""

    deliver: Deliver | None
    extra_messages: int

    def send(self, body: bytes) -> None:
        raise NotImplementedError

    async def request(self, body: bytes, wait_s: float = 30.0) -> tuple[int, Any]:
        raise NotImplementedError

    async def notify(self, body: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class _Waiting:
    """Turns the callback interface into an awaitable for the set-up steps."""

    def __init__(self) -> None:
        self.future: asyncio.Future[tuple[int, Any]] | None = None

    def deliver(self, status: int, message: Any) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result((status, message))

    def fail(self, exc: Exception) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_exception(exc)


class HttpChannel(asyncio.Protocol, Channel):
    def __init__(self, host: str, port: int, path: str) -> None:
        self._host, self._port = host, port
        self._base = (
            f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\n"
            "content-type: application/json\r\n"
            "accept: application/json, text/event-stream\r\n"
        ).encode()
        self._head = self._base
        self._path = path
        self._parser = ResponseParser()
        self._transport: asyncio.Transport | None = None
        self._waiting = _Waiting()
        self._lost: Exception | None = None
        self.session_id: bytes | None = None
        self.deliver = None
        self.extra_messages = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            responses = self._parser.feed(data)
        except ChannelError as exc:
            self._fail(exc)
            return
        for status, headers, body in responses:
            sid = headers.get(b"mcp-session-id")
            if sid is not None and self.session_id is None:
                self.session_id = sid
            message, extra = decode_body(status, headers, body)
            self.extra_messages += extra
            if headers.get(b"connection", b"").lower() == b"close":
                self._lost = ChannelError("server closed the keep-alive connection")
            target = self.deliver
            if target is not None:
                target(status, message)
            else:
                self._waiting.deliver(status, message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ChannelError(f"connection lost: {exc!r}" if exc else "connection closed"))

    def _fail(self, exc: Exception) -> None:
        self._lost = exc
        self._waiting.fail(exc)
        if self.deliver is not None:
            self.deliver(0, exc)
            self.deliver = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, self._host, self._port)

    def _set_session(self) -> None:
        head = self._base
        if self.session_id is not None:
            head += b"mcp-session-id: " + self.session_id + b"\r\n"
            head += b"mcp-protocol-version: " + wl.PROTOCOL_VERSION.encode() + b"\r\n"
        self._head = head

    def send(self, body: bytes) -> None:
        transport = self._transport
        if transport is None or self._lost is not None:
            raise ChannelError(str(self._lost or "not connected"))
        transport.write(self._head + b"content-length: %d\r\n\r\n" % len(body) + body)

    async def request(self, body: bytes, wait_s: float = 30.0) -> tuple[int, Any]:
        self._waiting.future = asyncio.get_running_loop().create_future()
        self.send(body)
        try:
            return await asyncio.wait_for(self._waiting.future, wait_s)
        finally:
            self._waiting.future = None

    async def notify(self, body: bytes) -> None:
        status, _ = await self.request(body)
        if status not in (200, 202, 204):
            raise ChannelError(f"notification answered with HTTP {status}")

    async def initialize(self) -> None:
        status, message = await self.request(wl.Kind("init", "list", 0, wl.INITIALIZE).body(0))
        if status != 200 or not isinstance(message, dict) or "result" not in message:
            raise ChannelError(f"initialize failed: HTTP {status}: {str(message)[:300]}")
        self._set_session()
        await self.notify(wl.INITIALIZED_NOTIFICATION)

    async def close(self) -> None:
        transport = self._transport
        if transport is None:
            return
        if self.session_id is not None and self._lost is None:
            # End the session politely, as the SDK client does.
            head = self._head.replace(b"POST ", b"DELETE ", 1)
            self._waiting.future = asyncio.get_running_loop().create_future()
            transport.write(head + b"content-length: 0\r\n\r\n")
            with contextlib.suppress(TimeoutError, ChannelError):
                await asyncio.wait_for(self._waiting.future, 5.0)
        transport.close()


class StdioChannel(asyncio.SubprocessProtocol, Channel):
    """A subprocess MCP server (or a wrapper around one) on stdin/stdout."""

    def __init__(self, argv: Sequence[str], stderr: IO[bytes] | None, env: dict[str, str]) -> None:
        self._argv = list(argv)
        self._stderr = stderr
        self._env = env
        self._buf = bytearray()
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._waiting = _Waiting()
        self._exited: asyncio.Future[int] | None = None
        self._lost: Exception | None = None
        self.deliver = None
        self.extra_messages = 0

    @property
    def pid(self) -> int:
        assert self._transport is not None
        return self._transport.get_pid()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._exited = loop.create_future()
        transport, _ = await loop.subprocess_exec(
            lambda: self,
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr if self._stderr is not None else asyncio.subprocess.DEVNULL,
            env=self._env,
        )
        self._transport = transport
        stdin = transport.get_pipe_transport(0)
        self._stdin = cast(asyncio.WriteTransport, stdin)

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd != 1:
            return
        buf = self._buf
        buf += data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(buf[start:nl])
            start = nl + 1
            if line.strip():
                self._line(line)
        if start:
            del buf[:start]

    def _line(self, line: bytes) -> None:
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            self._fail(ChannelError(f"non-JSON line on stdout: {line[:120]!r}"))
            return
        if isinstance(message, dict) and "method" in message:
            self.extra_messages += 1
            if "id" in message and self._stdin is not None:
                # A server->client request: we offer no capabilities.
                answer = {
                    "jsonrpc": "2.0",
                    "id": message["id"],
                    "error": {"code": -32601, "message": "Method not found"},
                }
                self._stdin.write(orjson.dumps(answer) + b"\n")
            return
        target = self.deliver
        if target is not None:
            target(200, message)
        else:
            self._waiting.deliver(200, message)

    def process_exited(self) -> None:
        assert self._transport is not None
        code = self._transport.get_returncode()
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(code if code is not None else -1)
        self._fail(ChannelError(f"process exited with {code}"))

    def _fail(self, exc: Exception) -> None:
        if self._lost is None:
            self._lost = exc
        self._waiting.fail(exc)
        if self.deliver is not None:
            self.deliver(0, exc)
            self.deliver = None

    def send(self, body: bytes) -> None:
        if self._stdin is None or self._lost is not None:
            raise ChannelError(str(self._lost or "not started"))
        self._stdin.write(body + b"\n")

    async def request(self, body: bytes, wait_s: float = 30.0) -> tuple[int, Any]:
        self._waiting.future = asyncio.get_running_loop().create_future()
        self.send(body)
        try:
            return await asyncio.wait_for(self._waiting.future, wait_s)
        finally:
            self._waiting.future = None

    async def notify(self, body: bytes) -> None:
        self.send(body)

    async def initialize(self) -> None:
        _, message = await self.request(wl.Kind("init", "list", 0, wl.INITIALIZE).body(0))
        if not isinstance(message, dict) or "result" not in message:
            raise ChannelError(f"initialize failed: {str(message)[:300]}")
        await self.notify(wl.INITIALIZED_NOTIFICATION)

    async def close(self, grace: float = 5.0) -> None:
        transport = self._transport
        if transport is None:
            return
        if self._stdin is not None:
            self._stdin.close()  # EOF: the server should exit on its own
        assert self._exited is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._exited), grace)
        except TimeoutError:
            transport.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), grace)
            except TimeoutError:
                transport.kill()
                await self._exited
        transport.close()


class Budget:
    """How many more calls this process may start, or until when."""

    __slots__ = ("deadline_ns", "remaining")

    def __init__(self, calls: int | None, deadline_ns: int | None) -> None:
        self.remaining = calls
        self.deadline_ns = deadline_ns

    def take(self, now_ns: int) -> bool:
        if self.deadline_ns is not None and now_ns >= self.deadline_ns:
            return False
        if self.remaining is not None:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
        return True


class Recorder:
    """Exact latencies (ns) with the kind of each call, plus outcome counts."""

    __slots__ = ("kinds", "last_ns", "latencies", "outcomes")

    def __init__(self) -> None:
        self.latencies = array("q")
        self.kinds = array("B")
        self.outcomes: dict[tuple[int, str], int] = {}
        self.last_ns = 0

    def add(self, latency_ns: int, kind: int, outcome: str, now_ns: int) -> None:
        self.latencies.append(latency_ns)
        self.kinds.append(kind)
        key = (kind, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        self.last_ns = now_ns


class CallLoop:
    """Drives one channel: send, wait for the answer, record, send the next."""

    __slots__ = (
        "_bodies",
        "_budget",
        "_channel",
        "_done",
        "_i",
        "_kind",
        "_recorder",
        "_rpc_id",
        "_schedule",
        "_t0",
        "_tag",
        "failure",
    )

    def __init__(
        self,
        channel: Channel,
        workload: wl.Workload,
        schedule: list[int],
        recorder: Recorder,
        budget: Budget,
        done: Callable[[CallLoop], None],
        first_id: int,
        tag: bytes = b"",
    ) -> None:
        self._channel = channel
        self._tag = tag
        self._bodies = workload.kinds
        self._schedule = schedule
        self._recorder = recorder
        self._budget = budget
        self._done = done
        self._i = 0
        self._kind = 0
        self._rpc_id = first_id
        self._t0 = 0
        self.failure: Exception | None = None

    def start(self) -> None:
        self._channel.deliver = self._on_response
        self._next()

    def _next(self) -> None:
        now = _now()
        if not self._budget.take(now):
            self._channel.deliver = None
            self._done(self)
            return
        schedule = self._schedule
        self._kind = kind = schedule[self._i % len(schedule)]
        self._i += 1
        self._rpc_id += 1
        body = self._bodies[kind].body(self._rpc_id, self._tag)
        self._t0 = _now()
        try:
            self._channel.send(body)
        except ChannelError as exc:
            self._stop(exc)

    def _on_response(self, status: int, message: Any) -> None:
        t1 = _now()
        if status == 0:
            self._stop(message if isinstance(message, Exception) else ChannelError("lost"))
            return
        self._recorder.add(t1 - self._t0, self._kind, classify(status, message, self._rpc_id), t1)
        self._next()

    def _stop(self, exc: Exception) -> None:
        self.failure = exc
        self._channel.deliver = None
        self._done(self)

    @property
    def rpc_id(self) -> int:
        return self._rpc_id


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env
