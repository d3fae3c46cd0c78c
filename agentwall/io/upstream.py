"""Keep-alive HTTP/1.1 client pool to the upstream MCP server (h11 over asyncio).

One ``UpstreamPool`` per proxy.  ``request()`` sends one request on an idle
keep-alive connection (or a new one) and returns an ``UpstreamResponse`` as
soon as the response head arrives; the body is then read chunk by chunk, so
an SSE response is relayed as it is produced.  A connection goes back to the
pool only after a complete, reusable exchange.

Failures are typed: ``UpstreamError`` (cannot connect, connection dropped,
malformed HTTP: the front-end answers 502) and ``UpstreamTimeout`` (no
response head in time, or a stalled body: 504).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from typing import Any, cast
from urllib.parse import urlsplit

import h11

from agentwall.errors import UPSTREAM_TIMEOUT, ConfigError, UpstreamError

Headers = list[tuple[bytes, bytes]]


class UpstreamTimeout(UpstreamError):
    rpc_code = UPSTREAM_TIMEOUT


class UpstreamTarget:
    """The parsed ``--mcp-url``."""

    __slots__ = ("authority", "host", "path", "port", "scheme", "url")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--mcp-url must be an http:// or https:// URL, got {url!r}")
        if parts.username or parts.password:
            raise ConfigError("--mcp-url must not carry credentials")
        self.url = url
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        default_port = (parts.scheme == "https" and self.port == 443) or (
            parts.scheme == "http" and self.port == 80
        )
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = (host if default_port else f"{host}:{self.port}").encode("ascii")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self.path = path.encode("ascii")


class _Conn(asyncio.Protocol):
    """One upstream connection.  ``data_received`` feeds h11 and queues the
    events; the reader awaits them.  Reading pauses when the consumer falls
    behind, which pushes back on the upstream through TCP."""

    __slots__ = (
        "_events",
        "_paused",
        "_waiter",
        "closed",
        "h11",
        "idle_since",
        "loop",
        "received_any",
        "transport",
    )

    HIGH_WATER = 64

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
        self.transport: asyncio.Transport | None = None
        self._events: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self.closed = False
        self.received_any = False
        self.idle_since = 0.0

    # asyncio.Protocol -------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        self.h11.receive_data(data)
        self._drain_h11()

    def eof_received(self) -> bool | None:
        self.h11.receive_data(b"")
        self._drain_h11()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.h11.their_state not in (h11.CLOSED, h11.ERROR):
            with contextlib.suppress(h11.RemoteProtocolError):
                self.h11.receive_data(b"")
        self._drain_h11()
        self._events.append(h11.ConnectionClosed())
        self._wake()

    # ------------------------------------------------------------------------
    def _drain_h11(self) -> None:
        conn = self.h11
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    break
                self._events.append(event)
                if isinstance(event, h11.ConnectionClosed):
                    break
        except h11.RemoteProtocolError as exc:
            self._events.append(exc)
        if len(self._events) >= self.HIGH_WATER and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_event(self, deadline: float | None) -> Any:
        """The next h11 event; raises UpstreamTimeout past ``deadline``
        (loop time), UpstreamError on malformed HTTP."""
        while not self._events:
            if self.closed and not self._events:
                return h11.ConnectionClosed()
            waiter = self.loop.create_future()
            self._waiter = waiter
            handle = None
            if deadline is not None:
                delay = deadline - self.loop.time()
                if delay <= 0:
                    raise UpstreamTimeout("upstream did not answer in time")
                handle = self.loop.call_later(delay, _expire, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if handle is not None:
                    handle.cancel()
        event = self._events.popleft()
        if self._paused and len(self._events) < self.HIGH_WATER // 2 and self.transport:
            self._paused = False
            self.transport.resume_reading()
        if isinstance(event, h11.RemoteProtocolError):
            raise UpstreamError(f"upstream sent malformed HTTP: {event}")
        return event

    def send(self, *events: Any) -> None:
        assert self.transport is not None
        out = b"".join(self.h11.send(e) or b"" for e in events)
        self.transport.write(out)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout("upstream did not answer in time"))


class UpstreamResponse:
    """A response whose head has arrived.  Read the body with ``read()`` (all
    of it, bounded) or ``chunks()`` (as it arrives); always ``close()`` or
    finish reading so the connection is released."""

    __slots__ = ("_conn", "_done", "_pool", "headers", "reason", "status")

    def __init__(
        self, pool: UpstreamPool, conn: _Conn, status: int, reason: bytes, headers: Headers
    ) -> None:
        self._pool = pool
        self._conn = conn
        self.status = status
        self.reason = reason
        self.headers = headers
        self._done = False

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    async def next_chunk(self, idle_timeout: float | None = None) -> bytes | None:
        """The next piece of body, or None at its end.  ``idle_timeout``
        bounds the wait for each piece (for a stream that may stay quiet a
        long time, pass None)."""
        if self._done:
            return None
        conn = self._conn
        loop = conn.loop
        deadline = None if idle_timeout is None else loop.time() + idle_timeout
        try:
            while True:
                event = await conn.next_event(deadline)
                if isinstance(event, h11.Data):
                    return bytes(event.data)
                if isinstance(event, h11.EndOfMessage):
                    self._done = True
                    self._pool._release(conn)
                    return None
                if isinstance(event, h11.ConnectionClosed):
                    raise UpstreamError("upstream closed the connection mid-response")
        except BaseException:
            self._done = True
            self._pool._discard(conn)
            raise

    async def read(self, limit: int, idle_timeout: float | None) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = await self.next_chunk(idle_timeout)
            if chunk is None:
                return b"".join(parts)
            size += len(chunk)
            if size > limit:
                self.close()
                raise UpstreamError(f"upstream response body exceeds {limit} bytes")
            parts.append(chunk)

    def close(self) -> None:
        """Abandon the rest of the body (client went away, or we are done
        with a stream): the connection cannot be reused."""
        if not self._done:
            self._done = True
            self._pool._discard(self._conn)


class UpstreamPool:
    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 5.0,
        max_connections: int = 512,
        max_idle: int = 128,
        idle_keepalive: float = 4.0,
    ) -> None:
        self.target = UpstreamTarget(url)
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.max_idle = max_idle
        # Servers close idle keep-alive connections (uvicorn after 5 s); we
        # drop ours a little sooner so a request rarely races that close.
        self.idle_keepalive = idle_keepalive
        self._idle: list[_Conn] = []
        self._all: set[_Conn] = set()
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if self.target.scheme == "https" else None
        )
        self.requests = 0
        self.connects = 0
        self.reused = 0
        self.failures = 0

    # connection management -----------------------------------------------------
    async def _connect(self, deadline: float) -> _Conn:
        loop = asyncio.get_running_loop()
        target = self.target
        timeout = max(0.001, deadline - loop.time())
        try:
            async with asyncio.timeout(timeout):
                _transport, conn = await loop.create_connection(
                    lambda: _Conn(loop),
                    target.host,
                    target.port,
                    ssl=self._ssl,
                    server_hostname=target.host if self._ssl else None,
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"connecting to upstream {target.url} timed out after {timeout:.1f}s"
            ) from exc
        except OSError as exc:
            raise UpstreamError(f"cannot connect to upstream {target.url}: {exc}") from exc
        self.connects += 1
        self._all.add(conn)
        return conn

    async def _acquire(self, deadline: float) -> tuple[_Conn, bool]:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.closed or now - conn.idle_since > self.idle_keepalive:
                self._discard(conn)
                continue
            self.reused += 1
            return conn, True
        while self._open >= self.max_connections:
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(max(0.001, deadline - loop.time())):
                    await waiter
            except TimeoutError as exc:
                raise UpstreamTimeout("no upstream connection became free in time") from exc
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if self._idle:
                return await self._acquire(deadline)
        self._open += 1
        try:
            return await self._connect(deadline), False
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    def _release(self, conn: _Conn) -> None:
        h = conn.h11
        if (
            not conn.closed
            and h.our_state is h11.DONE
            and h.their_state is h11.DONE
            and len(self._idle) < self.max_idle
        ):
            try:
                h.start_next_cycle()
            except h11.LocalProtocolError:
                self._discard(conn)
                return
            conn.received_any = False
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
            self._wake_one()
            return
        self._discard(conn)

    def _discard(self, conn: _Conn) -> None:
        conn.close()
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        self._open = max(0, self._open - 1)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        """Close every connection, idle or busy (shutdown)."""
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()

    # requests ------------------------------------------------------------------
    async def request(
        self,
        method: bytes,
        headers: Headers,
        body: bytes = b"",
        *,
        head_timeout: float,
    ) -> UpstreamResponse:
        """Send one request, wait for the response head (not the body)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + head_timeout
        self.requests += 1
        target = self.target
        out_headers: Headers = [(b"host", target.authority)]
        if body or method == b"POST":
            out_headers.append((b"content-length", str(len(body)).encode("ascii")))
        out_headers.extend(headers)
        req = h11.Request(method=method, target=target.path, headers=out_headers)
        for attempt in (0, 1):
            conn, reused = await self._acquire(deadline)
            try:
                if body:
                    conn.send(req, h11.Data(data=body), h11.EndOfMessage())
                else:
                    conn.send(req, h11.EndOfMessage())
                while True:
                    event = await conn.next_event(deadline)
                    if isinstance(event, h11.Response):
                        return UpstreamResponse(
                            self, conn, event.status_code, event.reason, list(event.headers)
                        )
                    if isinstance(event, h11.InformationalResponse):
                        continue
                    if isinstance(event, h11.ConnectionClosed):
                        # A reused keep-alive connection the server closed just
                        # as we wrote: it never read the request, so one retry
                        # on a fresh connection is safe.
                        if reused and attempt == 0 and not conn.received_any:
                            break
                        raise UpstreamError("upstream closed the connection without answering")
                    raise UpstreamError(f"unexpected upstream event {type(event).__name__}")
            except BaseException:
                self._discard(conn)
                self.failures += 1
                raise
            self._discard(conn)
        raise UpstreamError("upstream closed the connection without answering")

    async def probe(self, within: float = 1.0) -> bool:
        """Can we open a TCP connection to the upstream right now?"""
        loop = asyncio.get_running_loop()
        if any(not c.closed for c in self._idle):
            return True
        try:
            conn = await self._connect(loop.time() + within)
        except UpstreamError:
            return False
        conn.close()
        self._all.discard(conn)
        return True
