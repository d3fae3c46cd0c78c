"""The built-in fast upstream: an MCP server over Streamable HTTP on a raw asyncio Protocol.

Why not the SDK server?  It runs on Starlette/uvicorn/anyio and spends a few
hundred microseconds of CPU per call, which on a 2-core machine would be the
bottleneck of any benchmark and hide the proxy we want to measure.  This one
parses HTTP/1.1 by hand (keep-alive, pipelining, Content-Length and chunked
bodies), answers with ``application/json``, and streams ``text/event-stream``
only for the ``progress`` tool.  It is a real MCP peer: the official SDK client
talks to it (``tests/benchtool/test_fast_server.py``).

Streamable HTTP as a legacy (2025-03-26 .. 2025-11-25) server does it:
``initialize`` assigns ``Mcp-Session-Id``; every later POST must carry it
(missing: 400, unknown: 404); notifications and responses get 202; GET gets
405 (no server-initiated stream); DELETE ends the session.

Run: ``python -m agentwall.demo.fast_server [--host H] [--port P]``.  It prints
``READY http://H:P/mcp`` on stdout once it is listening, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import sys
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any, Final, TypeVar, cast

import orjson

from agentwall.demo.mcp_logic import INVALID_REQUEST, PARSE_ERROR, Reply, dispatch, error

T = TypeVar("T")

MAX_HEAD: Final = 64 * 1024
MAX_BODY: Final = 16 * 1024 * 1024
MAX_SESSIONS: Final = 100_000
PATHS: Final = frozenset({b"/mcp", b"/"})

_REASONS: Final = {
    200: b"OK",
    202: b"Accepted",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    501: b"Not Implemented",
}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "path")

    def __init__(
        self, method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes, keep_alive: bool
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class RequestParser:
    """Incremental HTTP/1.1 request parser: feed bytes, take whole requests.

    Strict where ambiguity could smuggle a request (duplicate or non-numeric
    Content-Length, both Content-Length and Transfer-Encoding, whitespace
    before a colon), small otherwise.
    """

    __slots__ = ("_buf", "_head")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head: tuple[bytes, bytes, dict[bytes, bytes], bool] | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_request(self) -> Request | None:
        buf = self._buf
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise HttpError(431, "request head too large")
                return None
            if end > MAX_HEAD:
                raise HttpError(431, "request head too large")
            self._head = _parse_head(bytes(buf[:end]))
            del buf[: end + 4]
        method, path, headers, keep_alive = self._head
        te = headers.get(b"transfer-encoding")
        if te is not None:
            if te.lower() != b"chunked" or b"content-length" in headers:
                raise HttpError(501 if b"content-length" not in headers else 400, "bad framing")
            parsed = _take_chunked(buf)
            if parsed is None:
                return None
            body, used = parsed
        else:
            length = _content_length(headers.get(b"content-length"))
            if len(buf) < length:
                return None
            body, used = bytes(buf[:length]), length
        del buf[:used]
        self._head = None
        return Request(method, path, headers, body, keep_alive)


def _parse_head(head: bytes) -> tuple[bytes, bytes, dict[bytes, bytes], bool]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "malformed header line")
        key = name.lower()
        if key in headers:
            if key in (b"content-length", b"transfer-encoding", b"host"):
                raise HttpError(400, f"duplicate {key.decode()} header")
            headers[key] += b", " + value.strip()
        else:
            headers[key] = value.strip()
    connection = headers.get(b"connection", b"").lower()
    if version == b"HTTP/1.1":
        keep_alive = b"close" not in connection
    else:
        keep_alive = b"keep-alive" in connection
    path = target.split(b"?", 1)[0]
    return method, path, headers, keep_alive


def _content_length(raw: bytes | None) -> int:
    if raw is None:
        return 0
    if not raw.isdigit():
        raise HttpError(400, "invalid Content-Length")
    length = int(raw)
    if length > MAX_BODY:
        raise HttpError(413, "request body too large")
    return length


def _take_chunked(buf: bytearray) -> tuple[bytes, int] | None:
    """Decode a complete chunked body from the start of ``buf``, or None if incomplete."""
    pos = 0
    body = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_field = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            raise HttpError(400, "invalid chunk size") from None
        if size < 0 or len(body) + size > MAX_BODY:
            raise HttpError(413, "request body too large")
        pos = eol + 2
        if size == 0:
            # Skip trailers up to the blank line.
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return bytes(body), eol + 2
                pos = eol + 2
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise HttpError(400, "chunk not terminated by CRLF")
        pos += size + 2


def _response(status: int, body: bytes, extra: bytes = b"", *, close: bool = False) -> bytes:
    head = b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\n" % (status, _REASONS[status], len(body))
    if body:
        head += b"content-type: application/json\r\n"
    if close:
        head += b"connection: close\r\n"
    return head + extra + b"\r\n" + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse_event(message: dict[str, Any]) -> bytes:
    return _chunk(b"event: message\ndata: " + orjson.dumps(message) + b"\n\n")


class Sessions:
    """Live session ids, oldest evicted first beyond ``MAX_SESSIONS``."""

    def __init__(self) -> None:
        self._ids: OrderedDict[bytes, None] = OrderedDict()

    def new(self) -> bytes:
        sid = secrets.token_hex(16).encode()
        self._ids[sid] = None
        if len(self._ids) > MAX_SESSIONS:
            self._ids.popitem(last=False)
        return sid

    def __contains__(self, sid: bytes) -> bool:
        return sid in self._ids

    def end(self, sid: bytes) -> bool:
        if sid not in self._ids:
            return False
        del self._ids[sid]
        return True


class McpHttpConnection(asyncio.Protocol):
    """One client connection; requests are answered strictly in order."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions
        self._parser = RequestParser()
        self._transport: asyncio.Transport | None = None
        self._streaming = False
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; same interface.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        if not self._streaming:
            self._serve()

    def _serve(self) -> None:
        transport = self._transport
        assert transport is not None
        while not self._closed:
            try:
                request = self._parser.next_request()
            except HttpError as exc:
                body = orjson.dumps(error(None, INVALID_REQUEST, f"Bad Request: {exc}"))
                transport.write(_response(exc.status, body, close=True))
                transport.close()
                self._closed = True
                return
            if request is None:
                return
            if self._handle(request, transport):
                return  # an SSE stream is being written; resume when it ends
            if not request.keep_alive:
                transport.close()
                self._closed = True
                return

    def _handle(self, request: Request, transport: asyncio.Transport) -> bool:
        """Answer one request; True when an asynchronous SSE stream was started."""
        close = not request.keep_alive
        if request.path not in PATHS:
            body = orjson.dumps(error(None, INVALID_REQUEST, "Not Found"))
            transport.write(_response(404, body, close=close))
            return False
        sid = request.headers.get(b"mcp-session-id")
        if request.method == b"POST":
            return self._post(request, sid, transport, close)
        if request.method == b"DELETE":
            status = 200 if sid is not None and self._sessions.end(sid) else 404
            transport.write(_response(status, b"", close=close))
            return False
        # No server-initiated GET stream: 405 is the spec's answer for that.
        transport.write(_response(405, b"", b"allow: POST, DELETE\r\n", close=close))
        return False

    def _post(
        self, request: Request, sid: bytes | None, transport: asyncio.Transport, close: bool
    ) -> bool:
        try:
            message = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            body = orjson.dumps(error(None, PARSE_ERROR, "Parse error"))
            transport.write(_response(400, body, close=close))
            return False
        is_init = isinstance(message, dict) and message.get("method") == "initialize"
        if not is_init:
            if sid is None:
                body = orjson.dumps(error(None, INVALID_REQUEST, "Bad Request: Missing session ID"))
                transport.write(_response(400, body, close=close))
                return False
            if sid not in self._sessions:
                body = orjson.dumps(error(None, INVALID_REQUEST, "Session not found"))
                transport.write(_response(404, body, close=close))
                return False
        if isinstance(message, list):
            return self._batch(message, transport, close)
        reply = dispatch(message)
        if reply.response is None:
            transport.write(_response(202, b"", close=close))
            return False
        extra = b""
        if reply.new_session:
            extra = b"mcp-session-id: " + self._sessions.new() + b"\r\n"
        wants_sse = b"text/event-stream" in request.headers.get(b"accept", b"")
        if not reply.progress or not wants_sse:
            transport.write(_response(200, orjson.dumps(reply.response), extra, close=close))
            return False
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        head += b"transfer-encoding: chunked\r\nx-accel-buffering: no\r\n"
        if close:
            head += b"connection: close\r\n"
        transport.write(head + extra + b"\r\n")
        if reply.delay_s <= 0:
            transport.write(b"".join(_sse_event(n) for n in reply.progress))
            transport.write(_sse_event(reply.response) + b"0\r\n\r\n")
            return False
        self._streaming = True
        task = asyncio.get_running_loop().create_task(self._stream(reply, transport, close))
        task.add_done_callback(_log_failure)
        return True

    def _batch(self, messages: list[Any], transport: asyncio.Transport, close: bool) -> bool:
        if not messages:
            body = orjson.dumps(error(None, INVALID_REQUEST, "Invalid Request: empty batch"))
            transport.write(_response(400, body, close=close))
            return False
        answers = [r.response for r in map(dispatch, messages) if r.response is not None]
        if not answers:
            transport.write(_response(202, b"", close=close))
        else:
            transport.write(_response(200, orjson.dumps(answers), close=close))
        return False

    async def _stream(self, reply: Reply, transport: asyncio.Transport, close: bool) -> None:
        for note in reply.progress:
            await asyncio.sleep(reply.delay_s)
            if self._closed:
                return
            transport.write(_sse_event(note))
        assert reply.response is not None
        transport.write(_sse_event(reply.response) + b"0\r\n\r\n")
        self._streaming = False
        if close:
            transport.close()
            self._closed = True
            return
        self._serve()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        print(f"fast_server: stream failed: {task.exception()!r}", file=sys.stderr)


async def serve(host: str, port: int, ready: asyncio.Future[str] | None = None) -> None:
    """Serve until cancelled; ``ready`` gets the endpoint URL once listening."""
    sessions = Sessions()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: McpHttpConnection(sessions), host, port, backlog=1024)
    sock_port = server.sockets[0].getsockname()[1]
    url = f"http://{host}:{sock_port}/mcp"
    if ready is not None:
        ready.set_result(url)
    else:
        print(f"READY {url}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def run_fast(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop (a dependency) when it is importable."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - stay runnable without it
        return asyncio.run(coro)
    result: T = uvloop.run(coro)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentwall.demo.fast_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    run_fast(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
