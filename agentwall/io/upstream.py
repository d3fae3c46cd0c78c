"""Keep-alive HTTP/1.1 client pool to the upstream MCP server (asyncio Protocol).

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

from mypy_extensions import mypyc_attr

from agentwall.core import mcp_http as mh
from agentwall.errors import UPSTREAM_TIMEOUT, ConfigError, UpstreamError
from agentwall.io.deadline import DeadlineTimer

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


class _Closed:
    """The upstream closed the connection (queued after the last event)."""


_CLOSED = _Closed()


class _Conn(asyncio.Protocol):
    """One upstream connection.  ``data_received`` feeds the response parser
    and queues its events; the reader awaits them.  Reading pauses when the
    consumer falls behind, which pushes back on the upstream through TCP."""

    __slots__ = (
        "_deadline",
        "_events",
        "_paused",
        "_wait_deadline",
        "_waiter",
        "closed",
        "idle_since",
        "in_exchange",
        "loop",
        "parser",
        "received_any",
        "transport",
    )

    HIGH_WATER = 64

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.parser = mh.ResponseParser()
        self.transport: asyncio.Transport | None = None
        self._events: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._wait_deadline = 0.0  # the waiter's deadline (loop time); 0: none
        # One timer for every wait on this connection (agentwall/io/deadline.py).
        self._deadline = DeadlineTimer(loop, self._deadline_due)
        self._paused = False
        self.closed = False
        self.received_any = False
        self.in_exchange = False
        self.idle_since = 0.0

    # asyncio.Protocol -------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        if not self.in_exchange:
            # Bytes from a keep-alive upstream between exchanges: it is not
            # speaking HTTP the way we do; never reuse this connection.
            self._events.append(UpstreamError("upstream sent data outside of a response"))
            self.close()
            return
        try:
            self._events.extend(self.parser.feed(data))
        except mh.HttpFramingError as exc:
            self._events.append(UpstreamError(f"upstream sent malformed HTTP: {exc}"))
            self.close()
        self._after_events()

    def eof_received(self) -> bool | None:
        self._finish()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._deadline.cancel()
        self._finish()

    def _finish(self) -> None:
        if self.in_exchange:
            # A response cut short: _CLOSED below says so.
            with contextlib.suppress(mh.HttpFramingError):
                self._events.extend(self.parser.close())
        self._events.append(_CLOSED)
        self._after_events()

    # ------------------------------------------------------------------------
    def _after_events(self) -> None:
        if len(self._events) >= self.HIGH_WATER and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_event(self, deadline: float | None) -> Any:
        """The next parser event (``ResponseHead``, body ``bytes``,
        ``BODY_END``) or ``_CLOSED``; raises UpstreamTimeout past
        ``deadline`` (loop time), UpstreamError on malformed HTTP."""
        events = self._events
        while not events:
            if self.closed:
                return _CLOSED
            if deadline is not None:
                if deadline <= self.loop.time():
                    raise UpstreamTimeout("upstream did not answer in time")
                self._wait_deadline = deadline
                self._deadline.fire_by(deadline)
            waiter = self.loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
                self._wait_deadline = 0.0
        event = events.popleft()
        if self._paused and len(events) < self.HIGH_WATER // 2 and self.transport:
            self._paused = False
            self.transport.resume_reading()
        if isinstance(event, UpstreamError):
            raise event
        return event

    def send_request(self, data: bytes) -> None:
        assert self.transport is not None
        self.parser.start()
        self.in_exchange = True
        self.transport.write(data)

    def _deadline_due(self) -> None:
        waiter = self._waiter
        deadline = self._wait_deadline
        if waiter is None or waiter.done() or not deadline:
            return  # nothing waits now; the next wait arms the timer again
        if self.loop.time() >= deadline:
            _expire(waiter)
        else:
            self._deadline.fire_by(deadline)

    def close(self) -> None:
        self.closed = True
        self._deadline.cancel()
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout("upstream did not answer in time"))


class UpstreamResponse:
    """A response whose head has arrived.  Read the body with ``read()`` (all
    of it, bounded) or ``next_chunk()`` (as it arrives); always ``close()`` or
    finish reading so the connection is released."""

    __slots__ = ("_conn", "_done", "_keep_alive", "_pool", "headers", "reason", "status")

    def __init__(self, pool: UpstreamPool, conn: _Conn, head: mh.ResponseHead) -> None:
        self._pool = pool
        self._conn = conn
        self.status = head.status
        self.reason = head.reason
        self.headers = head.headers
        self._keep_alive = head.keep_alive
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
        deadline = None if idle_timeout is None else conn.loop.time() + idle_timeout
        try:
            event = await conn.next_event(deadline)
            if isinstance(event, bytes):
                return event
            if event is mh.BODY_END:
                self._done = True
                conn.in_exchange = False
                if self._keep_alive and not conn.closed:
                    self._pool._release(conn)
                else:
                    self._pool._discard(conn)
                return None
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
                return parts[0] if len(parts) == 1 else b"".join(parts)
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


# CredentialedUpstreamPool (agentwall.io.oidc, not compiled) extends it.
@mypyc_attr(allow_interpreted_subclasses=True)
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
        self._prefixes: dict[bytes, bytes] = {}
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

    def _take_idle(self) -> _Conn | None:
        """A live idle keep-alive connection, without suspending (the common
        case: no coroutine, no loop turn)."""
        if not self._idle:
            return None
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.closed or now - conn.idle_since > self.idle_keepalive:
                self._discard(conn)
                continue
            self.reused += 1
            return conn
        return None

    async def _acquire(self, deadline: float) -> tuple[_Conn, bool]:
        conn = self._take_idle()
        if conn is not None:
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
        if not conn.closed and len(self._idle) < self.max_idle:
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
        head = self._request_head(method, headers, body)
        data = head + body if body else head
        for attempt in (0, 1):
            idle = self._take_idle()
            if idle is not None:
                conn, reused = idle, True
            else:
                conn, reused = await self._acquire(deadline)
            try:
                conn.send_request(data)
                event = await conn.next_event(deadline)
                if isinstance(event, mh.ResponseHead):
                    return UpstreamResponse(self, conn, event)
                # A reused keep-alive connection the server closed just as we
                # wrote: it never read the request, so one retry on a fresh
                # connection is safe.
                if event is _CLOSED and reused and attempt == 0 and not conn.received_any:
                    self._discard(conn)
                    continue
                raise UpstreamError("upstream closed the connection without answering")
            except BaseException:
                self._discard(conn)
                self.failures += 1
                raise
        raise UpstreamError("upstream closed the connection without answering")

    def _request_head(self, method: bytes, headers: Headers, body: bytes) -> bytes:
        """Our own request bytes.  Header names and values arrive validated
        (our request parser read them from the agent, or they are ours);
        counting the line breaks is the last guard against splitting the
        request: exactly one CRLF per line we wrote, and no other CR or LF."""
        prefix = self._prefixes.get(method)
        if prefix is None:
            target = self.target
            prefix = b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method, target.path, target.authority)
            self._prefixes[method] = prefix
        parts = [prefix]
        # Request line, host, each header, the blank line; content-length.
        breaks = 3 + len(headers)
        if body or method == b"POST":
            parts.append(b"content-length: %d\r\n" % len(body))
            breaks += 1
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        head = b"".join(parts)
        if not head.count(b"\n") == head.count(b"\r") == head.count(b"\r\n") == breaks:
            raise UpstreamError("refusing a header with a line break")
        return head

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
