"""What ``agentwall start`` adds to one MCP call, and what it sustains.

Real processes on 127.0.0.1: a minimal upstream (uvloop, canned JSON answer,
so the upstream's own cost is small and the same for both paths), a real
``agentwall start`` (writer process, durable chained audit log with fdatasync,
evaluator workers or in-process evaluation), and a keep-alive raw HTTP/1.1
client.  ``direct`` and ``proxied`` run the same call; the difference of
their medians is the added latency.

Run:  .venv/bin/python -m pytest bench/bench_http.py --benchmark-enable -q
Throughput (64 clients) is printed and stored in the benchmark's extra_info.
The machine is shared and noisy: compare medians and ratios, not absolutes.

    python bench/bench_http.py upstream PORT      # the upstream alone
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

POLICY = """\
version: "2"
default_action: deny
tools:
  - name: echo
    action: allow
    parameters:
      - name: text
        type: string
        pattern: "[a-z0-9 ]{0,64}"
"""


def body(text: str = "hello bench") -> bytes:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": text}},
        }
    ).encode()


BODY = body()


def request_bytes(host_port: str, payload: bytes = BODY) -> bytes:
    return (
        f"POST /mcp HTTP/1.1\r\nHost: {host_port}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-11-25\r\n"
        f"Mcp-Session-Id: bench-session\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


class RequestSource:
    """The request to send next.  The same bytes every time, or (``vary``)
    a different argument per call, so that a proxy's decision cache misses
    and every call takes the evaluator's hop, as a skeleton's always does."""

    def __init__(self, host_port: str, vary: bool = False) -> None:
        self.host_port = host_port
        self.fixed = None if vary else request_bytes(host_port)
        self.count = 0

    def next(self) -> bytes:
        if self.fixed is not None:
            return self.fixed
        self.count += 1
        return request_bytes(self.host_port, body(f"hello bench {self.count}"))


# -- the upstream ----------------------------------------------------------------------

_ANSWER = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello bench"}]}}'
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_ANSWER)).encode()
    + b"\r\n\r\n"
    + _ANSWER
)


class _UpstreamProtocol(asyncio.Protocol):
    """Just enough HTTP/1.1 for keep-alive POSTs with Content-Length."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while total := message_length(self.buf):
            self.buf = self.buf[total:]
            self.transport.write(_RESPONSE)


def message_length(buf: bytes) -> int:
    """Length of the first whole HTTP/1.1 message in ``buf`` (head and a
    Content-Length body; none means an empty body), or 0 while incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return 0
    head = buf[:end].lower()
    i = head.find(b"content-length:")
    length = (
        int(head[i + 15 : head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None])
        if i >= 0
        else 0
    )
    total = end + 4 + length
    return total if len(buf) >= total else 0


def run_upstream(port: int) -> None:
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_UpstreamProtocol, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# -- process helpers -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} not open after {timeout}s")


@contextlib.contextmanager
def processes(workers: int, *extra: str, log_dir: str | None = None) -> Iterator[tuple[int, int]]:
    tmp = Path(tempfile.mkdtemp(prefix="agentwall-bench-", dir=log_dir))
    up_port, proxy_port = free_port(), free_port()
    policy = tmp / "policy.yaml"
    policy.write_text(POLICY)
    key = tmp / "audit.key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)
    upstream = subprocess.Popen([sys.executable, __file__, "upstream", str(up_port)])
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentwall",
            "start",
            "--policy",
            str(policy),
            "--listen",
            f"127.0.0.1:{proxy_port}",
            "--mcp-url",
            f"http://127.0.0.1:{up_port}/mcp",
            "--log-path",
            str(tmp / "audit.log"),
            "--audit-key-file",
            str(key),
            "--workers",
            str(workers),
            *extra,
        ],
        env={**os.environ, "AGENTWALL_AUDIT_KEY_FILE": str(key)},
    )
    try:
        wait_port(up_port, upstream)
        wait_port(proxy_port, proxy)
        yield up_port, proxy_port
    finally:
        for p in (proxy, upstream):
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        # /dev/shm is memory: a run must not leave its logs behind there.
        shutil.rmtree(tmp, ignore_errors=True)


class KeepAliveClient:
    """One keep-alive connection; ``call()`` sends the request, reads the answer."""

    def __init__(self, port: int, vary: bool = False) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.requests = RequestSource(f"127.0.0.1:{port}", vary)
        self.buf = b""

    def call(self) -> bytes:
        self.sock.sendall(self.requests.next())
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = self.buf[:end].lower()
                i = head.find(b"content-length:")
                j = head.find(b"\r\n", i)
                length = int(head[i + 15 : j if j > 0 else None])
                total = end + 4 + length
                if len(self.buf) >= total:
                    body, self.buf = self.buf[end + 4 : total], self.buf[total:]
                    if not head.startswith(b"http/1.1 200"):
                        raise RuntimeError(
                            head.decode(errors="replace") + body.decode(errors="replace")
                        )
                    return body
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def close(self) -> None:
        self.sock.close()


class _LoadConnection(asyncio.Protocol):
    """One keep-alive connection of the load generator: sends the call,
    counts the complete 200 answer, sends the next, until ``stop_at``.
    A Protocol on uvloop rather than asyncio streams: the generator shares
    the two cores with what it measures, so it must cost little."""

    def __init__(self, requests: RequestSource, stop_at: float, done: asyncio.Future[None]) -> None:
        self.requests = requests
        self.stop_at = stop_at
        self.done = done
        self.buf = b""
        self.count = 0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.requests.next())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            i = head.find(b"content-length:")
            j = head.find(b"\r\n", i)
            total = end + 4 + int(head[i + 15 : j if j > 0 else None])
            if len(self.buf) < total:
                return
            if not head.startswith(b"http/1.1 200"):
                self._finish(RuntimeError(self.buf[:total].decode(errors="replace")))
                return
            self.buf = self.buf[total:]
            self.count += 1
            if time.perf_counter() >= self.stop_at:
                self._finish(None)
                return
            self.transport.write(self.requests.next())

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(exc or ConnectionError("closed"))

    def _finish(self, exc: Exception | None) -> None:
        if not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)
        self.transport.close()


async def throughput(
    port: int, clients: int, seconds: float, vary: bool = False
) -> tuple[int, float]:
    """``clients`` keep-alive connections calling in a loop for ``seconds``
    (run it on uvloop: ``uvloop.run(throughput(...))``)."""
    loop = asyncio.get_running_loop()
    requests = RequestSource(f"127.0.0.1:{port}", vary)
    stop_at = time.perf_counter() + seconds
    conns: list[_LoadConnection] = []
    t0 = time.perf_counter()
    for _ in range(clients):
        done: asyncio.Future[None] = loop.create_future()
        _transport, conn = await loop.create_connection(
            lambda done=done: _LoadConnection(requests, stop_at, done), "127.0.0.1", port
        )
        conns.append(conn)
    await asyncio.gather(*(c.done for c in conns))
    return sum(c.count for c in conns), time.perf_counter() - t0


# -- benchmarks ---------------------------------------------------------------------------------


# The audit log on the real disk (every batch fdatasynced: ~4 ms per sync on
# the CI machine's virtual disk) and on tmpfs (/dev/shm: fdatasync is nearly
# free), which isolates what the proxy itself costs.
STACKS = {
    "workers2-disk": (2, None),
    "workers0-disk": (0, None),
    "workers2-tmpfs": (2, "/dev/shm"),
    "workers0-tmpfs": (0, "/dev/shm"),
}


@pytest.fixture(scope="module", params=list(STACKS))
def stack(request: pytest.FixtureRequest) -> Iterator[tuple[int, int]]:
    workers, log_dir = STACKS[request.param]
    if log_dir is not None and not os.path.isdir(log_dir):
        pytest.skip(f"{log_dir} is not available")
    with processes(workers, log_dir=log_dir) as ports:
        yield ports


def _latency(benchmark: Any, port: int) -> None:
    client = KeepAliveClient(port)
    for _ in range(200):  # warm: connections, caches, branch predictors
        client.call()
    try:
        benchmark.pedantic(client.call, rounds=3000, iterations=1, warmup_rounds=50)
    finally:
        client.close()
    if benchmark.stats is None:
        # --benchmark-disable: pedantic() ran the call once, as a smoke test,
        # and kept no timings to summarise.
        return
    data = sorted(benchmark.stats.stats.data)
    p50, p99 = data[len(data) // 2], data[int(len(data) * 0.99)]
    benchmark.extra_info["p50_us"] = round(p50 * 1e6, 1)
    benchmark.extra_info["p99_us"] = round(p99 * 1e6, 1)
    print(f"\n{benchmark.name}: p50 {p50 * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us")


def test_direct_call(benchmark: Any, stack: tuple[int, int]) -> None:
    _latency(benchmark, stack[0])


def test_proxied_call(benchmark: Any, stack: tuple[int, int]) -> None:
    _latency(benchmark, stack[1])


def _throughput(benchmark: Any, port: int, what: str) -> None:
    import uvloop

    def run() -> float:
        done, elapsed = uvloop.run(throughput(port, 64, 5.0))
        rate = done / elapsed
        benchmark.extra_info["calls_per_second"] = round(rate)
        print(f"\n{benchmark.name}: {done} {what} in {elapsed:.2f}s = {rate:.0f}/s")
        return rate

    benchmark.pedantic(run, rounds=1, iterations=1)


def test_direct_throughput_64_clients(benchmark: Any, stack: tuple[int, int]) -> None:
    """The load generator's own ceiling on this machine, in the same run."""
    _throughput(benchmark, stack[0], "direct calls")


def test_proxied_throughput_64_clients(benchmark: Any, stack: tuple[int, int]) -> None:
    _throughput(benchmark, stack[1], "audited tools/call")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "upstream":
        run_upstream(int(sys.argv[2]))
    else:
        print(__doc__)
