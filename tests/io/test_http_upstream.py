"""The upstream client pool against a real (scripted) HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from agentwall.errors import UpstreamError
from agentwall.io.upstream import UpstreamPool, UpstreamTimeout

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

JSON_OK = (
    b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'
)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return head + body


class Scripted:
    """A scripted server that closes every connection it accepted on exit."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)  # type: ignore[arg-type]
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/mcp"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for task in self.tasks:
            task.cancel()
        for writer in self.writers:
            writer.close()
        await asyncio.sleep(0.01)
        await self.server.wait_closed()


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


@pytest.mark.timeout(30)
def test_json_response_and_keep_alive_reuse() -> None:
    seen: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                seen.append(await read_request(reader))
                writer.write(JSON_OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        async with Scripted(handler) as url:
            pool = UpstreamPool(url)
            for _ in range(3):
                resp = await pool.request(
                    b"POST", [(b"content-type", b"application/json")], b"{}", head_timeout=5
                )
                assert resp.status == 200
                assert resp.header(b"content-type") == b"application/json"
                assert await resp.read(1 << 20, 5) == b'{"ok":true}'
            assert connections == 1
            assert pool.reused == 2
            assert seen[0].startswith(b"POST /mcp HTTP/1.1\r\n")
            assert b"host: 127.0.0.1:" in seen[0]
            assert seen[0].endswith(b"\r\n\r\n{}")
            await pool.close()

    run(main())


@pytest.mark.timeout(30)
def test_sse_chunks_arrive_before_the_stream_ends() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        event = b"data: first\n\n"
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
        await release.wait()  # the client must see "first" while we wait
        event = b"data: last\n\n"
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event))
        await writer.drain()

    async def main() -> None:
        async with Scripted(handler) as url:
            pool = UpstreamPool(url)
            resp = await pool.request(b"POST", [], b"{}", head_timeout=5)
            assert await resp.next_chunk(5) == b"data: first\n\n"
            release.set()
            assert await resp.next_chunk(5) == b"data: last\n\n"
            assert await resp.next_chunk(5) is None

    run(main())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(30)
def test_upstream_down_is_upstream_error() -> None:
    async def main() -> None:
        pool = UpstreamPool(f"http://127.0.0.1:{_closed_port()}/mcp")
        with pytest.raises(UpstreamError, match="cannot connect") as info:
            await pool.request(b"POST", [], b"{}", head_timeout=5)
        assert not isinstance(info.value, UpstreamTimeout)
        assert not await pool.probe()

    run(main())


@pytest.mark.timeout(30)
def test_silent_upstream_is_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(10)

    async def main() -> None:
        async with Scripted(handler) as url:
            pool = UpstreamPool(url)
            with pytest.raises(UpstreamTimeout):
                await pool.request(b"POST", [], b"{}", head_timeout=0.3)

    run(main())


@pytest.mark.timeout(30)
def test_stale_keep_alive_connection_is_retried_once() -> None:
    count = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        await read_request(reader)
        count += 1
        writer.write(JSON_OK)
        await writer.drain()
        writer.close()  # server drops the keep-alive connection after each answer

    async def main() -> None:
        async with Scripted(handler) as url:
            pool = UpstreamPool(url)
            for _ in range(3):
                resp = await pool.request(b"POST", [], b"{}", head_timeout=5)
                assert await resp.read(100, 5) == b'{"ok":true}'
                await asyncio.sleep(0.05)
            assert count == 3

    run(main())


@pytest.mark.timeout(30)
def test_malformed_response_is_upstream_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        async with Scripted(handler) as url:
            pool = UpstreamPool(url)
            with pytest.raises(UpstreamError, match="malformed"):
                await pool.request(b"POST", [], b"{}", head_timeout=5)

    run(main())


@pytest.mark.timeout(30)
def test_body_cut_short_is_upstream_error_and_connection_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with Scripted(handler) as url:
            pool = UpstreamPool(url)
            resp = await pool.request(b"POST", [], b"{}", head_timeout=5)
            with pytest.raises(UpstreamError):
                await resp.read(1000, 5)
            assert pool._idle == []

    run(main())


@pytest.mark.timeout(30)
def test_oversize_body_is_refused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n" + b"x" * 5000)
        await writer.drain()

    async def main() -> None:
        async with Scripted(handler) as url:
            pool = UpstreamPool(url)
            resp = await pool.request(b"POST", [], b"{}", head_timeout=5)
            with pytest.raises(UpstreamError, match="exceeds"):
                await resp.read(1000, 5)

    run(main())


def test_mcp_url_must_be_http() -> None:
    from agentwall.errors import ConfigError

    with pytest.raises(ConfigError):
        UpstreamPool("ftp://example.com/")
    with pytest.raises(ConfigError):
        UpstreamPool("http://user:pw@127.0.0.1/mcp")
    pool = UpstreamPool("http://[::1]:3000/mcp?x=1")
    assert pool.target.authority == b"[::1]:3000"
    assert pool.target.path == b"/mcp?x=1"


def test_request_head_is_ours_and_refuses_line_breaks_in_headers() -> None:
    pool = UpstreamPool("http://127.0.0.1:3000/mcp")
    assert pool._request_head(b"POST", [(b"accept", b"a/b")], b"{}") == (
        b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1:3000\r\ncontent-length: 2\r\naccept: a/b\r\n\r\n"
    )
    assert pool._request_head(b"GET", [], b"") == (
        b"GET /mcp HTTP/1.1\r\nhost: 127.0.0.1:3000\r\n\r\n"
    )
    for name, value in [
        (b"x", b"1\r\nx-injected: 1"),
        (b"x", b"1\n"),
        (b"x", b"\r"),
        (b"x\r\nx-injected", b"1"),
    ]:
        with pytest.raises(UpstreamError):
            pool._request_head(b"POST", [(name, value)], b"")


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("first_timeout", "second_timeout"), [(5.0, 0.3), (0.3, 0.6)])
def test_a_kept_connection_times_out_at_each_requests_own_deadline(
    first_timeout: float, second_timeout: float
) -> None:
    # One deadline timer per connection is kept across requests and re-armed
    # lazily: a later request must time out at its own deadline, neither at
    # the earlier request's (5 s: too late) nor before its own (0.3 s: too early).
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(JSON_OK)
        await writer.drain()
        await read_request(reader)
        await asyncio.sleep(10)

    async def main() -> None:
        async with Scripted(handler) as url:
            pool = UpstreamPool(url)
            loop = asyncio.get_running_loop()
            resp = await pool.request(b"POST", [], b"{}", head_timeout=first_timeout)
            assert await resp.read(1 << 20, first_timeout) == b'{"ok":true}'
            started = loop.time()
            with pytest.raises(UpstreamTimeout):
                await pool.request(b"POST", [], b"{}", head_timeout=second_timeout)
            waited = loop.time() - started
            assert pool.reused == 1
            assert waited >= second_timeout - 0.01
            assert waited < 3.0  # well before the first request's 5 s
            await pool.close()

    run(main())
