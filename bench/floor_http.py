"""The floor under ``agentwall start``'s speed on this machine: a skeleton
proxy with the design card's process topology and almost no work per hop.

The skeleton does what the sidecar must do for one audited call, in the same
processes and over the same kinds of channel, and nothing else:

    client --TCP--> front-end --socketpair--> evaluator worker --> front-end
           --socketpair--> audit writer (append + fdatasync, group commit) --> front-end
           --TCP--> upstream --> front-end --TCP--> client

It parses only the Content-Length, the worker answers without looking at the
call, and the writer appends a fixed 256-byte record.  No policy, no JSON, no
HMAC, no metrics.  What the skeleton adds over direct is therefore what the
architecture itself costs here (process wake-ups, loopback hops, fdatasync),
a lower bound no implementation of that architecture can beat on this machine.

``--chain worker`` is the shortest chain the design card allows: the worker
hands its verdict's record straight to the writer, and the writer's durable
ack releases the call to the front-end, one front-end wake-up fewer::

    client --> front-end --> worker --> writer (append + fdatasync) --> front-end
           --> upstream --> front-end --> client

``--busy-poll-us N`` makes the skeleton's front-end poll instead of sleeping
while a call is in flight, with the same ``BusyPoll`` as ``agentwall start``
(which does so by default).  With both, the skeleton is the best case of the
design card on this machine.

``--vary-args`` sends a different argument on every call.  Without it the
real AgentWall (``--agentwall``) answers the repeated call from its decision
cache and skips the evaluator's hop that the skeleton always takes.

Run (takes ~1 minute; the log goes to the current directory's disk unless
``--log-dir`` says otherwise)::

    .venv/bin/python bench/floor_http.py [--log-dir /dev/shm] [--no-worker]
        [--writer process|inline|none] [--chain front|worker]
        [--busy-poll-us N] [--vary-args] [--agentwall]

It alternates direct and skeleton runs of the same client (bench_http's) and
prints medians, p99 and 64-client throughput.  Compare within a run only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_http  # a sibling module, not a package

from agentwall.benchtool import procstat
from agentwall.benchtool.stats import percentile

RECORD = b"r" * 255 + b"\n"
_LEN = struct.Struct("!I")


def _serve_worker(sock: socket.socket, to_writer: socket.socket | None = None) -> None:
    """Answer every framed call with a fixed verdict, in order: to the
    front-end, or (``to_writer``) as a record for the writer to make durable."""
    buf = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return
        buf += data
        answered = 0
        while len(buf) >= 4:
            (n,) = _LEN.unpack_from(buf)
            if len(buf) < 4 + n:
                break
            buf = buf[4 + n :]
            answered += 1
        if answered and to_writer is not None:
            to_writer.sendall(RECORD * answered)
        elif answered:
            sock.sendall(b"A" * answered)


def _serve_writer(sock: socket.socket, log_path: str, acks: socket.socket | None = None) -> None:
    """Group commit: append every record that has arrived, one fdatasync,
    then one ack byte per record, on ``sock`` or on ``acks``."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    buf = b""
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return
        buf += data
        whole = len(buf) - len(buf) % len(RECORD)
        if not whole:
            continue
        os.write(fd, buf[:whole])
        os.fdatasync(fd)
        buf = buf[whole:]
        (acks or sock).sendall(b"K" * (whole // len(RECORD)))


def _fork(target: Any, *args: Any, close: tuple[socket.socket | None, ...] = ()) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            # The parent's ends: held open here, the child would never see EOF.
            for sock in close:
                if sock is not None:
                    sock.close()
            target(*args)
        finally:
            os._exit(0)
    return pid


class _Upstream(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client
        self.buf = b""
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        total = bench_http.message_length(self.buf)
        if total:
            message, self.buf = self.buf[:total], self.buf[total:]
            self.client.poller.inflight -= 1
            self.client.transport.write(message)


class _Hub:
    """The front-end's two IPC channels, each a FIFO of waiting callbacks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, worker: socket.socket | None,
                 writer: socket.socket | None, inline_log: int | None,
                 chained: bool = False) -> None:  # fmt: skip
        self.worker, self.writer = worker, writer
        self.inline_log = inline_log
        # Chained: the worker sends its record to the writer, and ``writer``
        # is the writer's ack channel back to the front-end.
        self.chained = chained
        self.worker_waiting: list[Any] = []
        self.writer_waiting: list[Any] = []
        self.worker_out: list[bytes] = []
        self.writer_out: list[bytes] = []
        self.flush_scheduled = False
        self.loop = loop
        for sock, on_read in ((worker, self._worker_readable), (writer, self._writer_readable)):
            if sock is not None:
                sock.setblocking(False)
                loop.add_reader(sock.fileno(), on_read)

    def _schedule(self) -> None:
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        # One write per channel per loop turn, as the real pool and writer client do.
        self.flush_scheduled = False
        if self.worker_out and self.worker is not None:
            self.worker.sendall(b"".join(self.worker_out))
            self.worker_out.clear()
        if self.writer_out and self.writer is not None:
            self.writer.sendall(b"".join(self.writer_out))
            self.writer_out.clear()

    def judge(self, body: bytes, then: Any) -> None:
        """Evaluate, then make the verdict durable, then ``then()``."""
        if not self.chained:
            self.evaluate(body, lambda: self.audit(then))
            return
        assert self.worker is not None
        self.worker_out.append(_LEN.pack(len(body)) + body)
        self.writer_waiting.append(then)
        self._schedule()

    def evaluate(self, body: bytes, then: Any) -> None:
        if self.worker is None:
            then()
            return
        self.worker_out.append(_LEN.pack(len(body)) + body)
        self.worker_waiting.append(then)
        self._schedule()

    def audit(self, then: Any) -> None:
        if self.inline_log is not None:
            # The design card's departure, for comparison: the front-end
            # appends and syncs itself (blocking its loop, as wrap does).
            os.write(self.inline_log, RECORD)
            os.fdatasync(self.inline_log)
            then()
            return
        if self.writer is None:
            then()
            return
        self.writer_out.append(RECORD)
        self.writer_waiting.append(then)
        self._schedule()

    def _worker_readable(self) -> None:
        assert self.worker is not None
        self._answer(self.worker, self.worker_waiting)

    def _writer_readable(self) -> None:
        assert self.writer is not None
        self._answer(self.writer, self.writer_waiting)

    @staticmethod
    def _answer(sock: socket.socket, waiting: list[Any]) -> None:
        """One reply byte per waiting call, in order."""
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            # A skeleton whose helper died cannot measure anything: stop loudly.
            raise SystemExit("floor_http: a worker or writer process exited")
        for _ in data:
            waiting.pop(0)()


class _Poller:
    """The calls in flight, and the front-end's busy poll over them."""

    def __init__(self, budget_us: int) -> None:
        from agentwall.io.busy_poll import BusyPoll

        self.inflight = 0
        self.poll = BusyPoll(budget_us / 1e6, lambda: self.inflight > 0)


class _Client(asyncio.Protocol):
    def __init__(self, hub: _Hub, upstream_port: int, poller: _Poller) -> None:
        self.hub = hub
        self.poller = poller
        self.upstream_port = upstream_port
        self.buf = b""
        self.transport: Any = None
        self.upstream: _Upstream | None = None
        self.connecting: asyncio.Task[None] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        loop = asyncio.get_running_loop()
        self.connecting = loop.create_task(self._connect(loop))

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        _t, self.upstream = await loop.create_connection(
            lambda: _Upstream(self), "127.0.0.1", self.upstream_port
        )
        self.data_received(b"")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.upstream is None:
            return
        total = bench_http.message_length(self.buf)
        if total:
            request, self.buf = self.buf[:total], self.buf[total:]
            upstream = self.upstream
            self.poller.inflight += 1
            self.poller.poll.begin()
            self.hub.judge(
                request[request.find(b"\r\n\r\n") + 4 :],
                lambda: upstream.transport.write(request),
            )


def run_skeleton(
    port: int,
    upstream_port: int,
    log_path: str,
    worker: bool,
    writer: str,
    chain: str = "front",
    busy_poll_us: int = 0,
) -> None:
    import uvloop

    worker_end = writer_end = None
    inline_log = None
    chained = chain == "worker"
    if writer == "inline":
        inline_log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    if chained:
        # front-end -> worker -> writer -> front-end: three socketpairs.
        worker_end, worker_child = socket.socketpair()
        writer_end, acks_child = socket.socketpair()
        records_in, records_out = socket.socketpair()
        _fork(_serve_writer, records_in, log_path, acks_child,
              close=(worker_end, writer_end, worker_child, records_out))  # fmt: skip
        _fork(_serve_worker, worker_child, records_out,
              close=(worker_end, writer_end, acks_child, records_in))  # fmt: skip
        for sock in (worker_child, acks_child, records_in, records_out):
            sock.close()
    if worker and not chained:
        worker_end, child = socket.socketpair()
        _fork(_serve_worker, child, close=(worker_end,))
        child.close()
    if writer == "process" and not chained:
        writer_end, child = socket.socketpair()
        _fork(_serve_writer, child, log_path, close=(worker_end, writer_end))
        child.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        hub = _Hub(loop, worker_end, writer_end, inline_log, chained)
        poller = _Poller(busy_poll_us)
        server = await loop.create_server(
            lambda: _Client(hub, upstream_port, poller), "127.0.0.1", port, backlog=1024
        )
        async with server:
            await server.serve_forever()

    uvloop.run(main())


@contextlib.contextmanager
def _processes(args: argparse.Namespace) -> Any:
    up_port, proxy_port = bench_http.free_port(), bench_http.free_port()
    tmp = Path(tempfile.mkdtemp(prefix="agentwall-floor-", dir=args.log_dir))
    here = str(Path(__file__).resolve())
    upstream = subprocess.Popen([sys.executable, bench_http.__file__, "upstream", str(up_port)])
    skeleton = subprocess.Popen(
        [
            sys.executable,
            here,
            "skeleton",
            str(proxy_port),
            str(up_port),
            str(tmp / "floor.log"),
            "1" if args.worker else "0",
            args.writer,
            args.chain,
            str(args.busy_poll_us),
        ]
    )
    try:
        bench_http.wait_port(up_port, upstream)
        bench_http.wait_port(proxy_port, skeleton)
        yield up_port, proxy_port
    finally:
        for p in (skeleton, upstream):
            p.terminate()
            p.wait(20)
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


def _latencies(port: int, calls: int, vary: bool = False) -> list[float]:
    client = bench_http.KeepAliveClient(port, vary)
    try:
        for _ in range(200):
            client.call()
        out = []
        for _ in range(calls):
            t = time.perf_counter()
            client.call()
            out.append(time.perf_counter() - t)
        return out
    finally:
        client.close()


def _pct(seconds: list[float], q: float) -> float:
    """In µs."""
    return percentile(sorted(seconds), q * 100) * 1e6


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "skeleton":
        port, up, log, w, a, chain, poll = sys.argv[2:9]
        run_skeleton(int(port), int(up), log, w == "1", a, chain, int(poll))
        return
    import uvloop

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", default=None, help="where the skeleton's log goes")
    parser.add_argument("--no-worker", dest="worker", action="store_false")
    parser.add_argument(
        "--writer", choices=("process", "inline", "none"), default="process",
        help="process: a writer process (the design card); inline: the front-end "
        "appends and syncs itself; none: no log",
    )  # fmt: skip
    parser.add_argument(
        "--chain", choices=("front", "worker"), default="front",
        help="front: the front-end passes the verdict to the writer (as agentwall start "
        "does); worker: the worker hands it to the writer, whose ack releases the call",
    )  # fmt: skip
    parser.add_argument(
        "--busy-poll-us", type=int, default=0,
        help="the skeleton front-end polls, not sleeps, for up to N µs while a call is "
        "in flight (agentwall start's default is 1000)",
    )  # fmt: skip
    parser.add_argument(
        "--vary-args", action="store_true",
        help="a different argument on every call: AgentWall's decision cache misses and "
        "each call takes the evaluator's hop, as the skeleton's always does (without it, "
        "AgentWall serves the repeated call from its cache)",
    )  # fmt: skip
    parser.add_argument(
        "--agentwall", action="store_true",
        help="also run the real `agentwall start --workers 2` (log in --log-dir), same rounds",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    if args.chain == "worker" and (not args.worker or args.writer != "process"):
        parser.error("--chain worker needs the worker and --writer process")
    paths = ["direct", "skeleton"] + (["agentwall"] if args.agentwall else [])
    samples: dict[str, list[float]] = {name: [] for name in paths}
    added_p50: dict[str, list[float]] = {name: [] for name in paths[1:]}
    rates: dict[str, list[float]] = {name: [] for name in paths}
    machine = procstat.MachineProbe()
    with contextlib.ExitStack() as stack:
        up_port, skeleton_port = stack.enter_context(_processes(args))
        ports = {"direct": up_port, "skeleton": skeleton_port}
        if args.agentwall:
            ports["agentwall"] = stack.enter_context(_agentwall(up_port, args.log_dir))
        machine.start()
        for _ in range(args.rounds):
            this_round = {
                name: _latencies(ports[name], args.calls, args.vary_args) for name in paths
            }
            for name, values in this_round.items():
                samples[name] += values
                if name != "direct":
                    added_p50[name].append(_pct(values, 0.5) - _pct(this_round["direct"], 0.5))
        for _ in range(2):
            for name in paths:
                done, elapsed = uvloop.run(
                    bench_http.throughput(ports[name], 64, args.seconds, args.vary_args)
                )
                rates[name].append(done / elapsed)
        machine.stop()
    hops = ("worker, " if args.worker else "no worker, ") + f"writer: {args.writer}"
    hops += f", chain: {args.chain}, busy poll: {args.busy_poll_us} us"
    hops += ", arguments: " + ("a new one per call" if args.vary_args else "the same every call")
    print(f"skeleton: {hops}; logs in {args.log_dir or 'a temp dir under $TMPDIR'}")
    direct = samples["direct"]
    print(f"1 client, {args.rounds} rounds x {args.calls} calls, alternated:")
    for name in paths:
        values = samples[name]
        line = f"  {name:9} p50 {_pct(values, 0.5):6.0f} us  p99 {_pct(values, 0.99):6.0f} us"
        if name != "direct":
            line += (
                f"  added p50 {_pct(values, 0.5) - _pct(direct, 0.5):+.0f} us"
                f" (per round: {', '.join(f'{x:.0f}' for x in added_p50[name])})"
                f", added p99 {_pct(values, 0.99) - _pct(direct, 0.99):+.0f} us"
            )
        print(line)
    print(machine.describe())
    print("64 clients, calls/s:")
    for name in paths:
        print(f"  {name:9} " + ", ".join(f"{r:,.0f}" for r in rates[name]))


@contextlib.contextmanager
def _agentwall(up_port: int, log_dir: str | None) -> Any:
    """The real sidecar in front of the same upstream: 2 workers, durable log."""
    tmp = Path(tempfile.mkdtemp(prefix="agentwall-floor-aw-", dir=log_dir))
    port = bench_http.free_port()
    policy = tmp / "policy.yaml"
    policy.write_text(bench_http.POLICY)
    key = tmp / "audit.key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)
    proxy = subprocess.Popen(
        [sys.executable, "-m", "agentwall", "start", "--policy", str(policy),
         "--listen", f"127.0.0.1:{port}", "--mcp-url", f"http://127.0.0.1:{up_port}/mcp",
         "--log-path", str(tmp / "audit.log"), "--audit-key-file", str(key), "--workers", "2"]
    )  # fmt: skip
    try:
        bench_http.wait_port(port, proxy)
        yield port
    finally:
        proxy.terminate()
        try:
            proxy.wait(20)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
