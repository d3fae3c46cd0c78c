"""The load generator: several processes, exact latencies merged in the parent.

Each load process runs uvloop with its share of the channels.  The phases are
kept apart so that only the measured window is timed:

1. connect and ``initialize`` every channel, then warm up (unrecorded calls);
2. report ``ready`` (with the PIDs of any subprocess it drives) and wait;
3. on ``go``, run until the call budget or the deadline is spent, recording
   every latency; report progress twice a second;
4. send the samples, wait for ``close``, end the sessions.

The parent takes its CPU snapshots of the system under test (the ``around``
hook) between the ``ready`` of the last process and ``go``, and again after
the last ``done``: that window contains only measured traffic.  Each load
process reports its own CPU time for the window, so a run can show that the
generator was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from array import array
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import IO, Any

from agentwall.benchtool import workload as wl
from agentwall.benchtool.channels import (
    Budget,
    CallLoop,
    Channel,
    HttpChannel,
    Recorder,
    StdioChannel,
    child_env,
)
from agentwall.benchtool.stats import LatencySummary, summarize


class LoadError(Exception):
    """The load run could not be completed (a channel failed, or time ran out)."""


@dataclass(frozen=True)
class HttpTarget:
    host: str
    port: int
    path: str = "/mcp"

    @classmethod
    def from_url(cls, url: str) -> HttpTarget:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"need an http://host:port/path URL, got {url!r}")
        return cls(parts.hostname, parts.port, parts.path or "/")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"


@dataclass(frozen=True)
class StdioTarget:
    """Each channel launches ``argv`` and talks to it over its pipes.

    ``{channel}`` in an argument becomes the channel's number, so that each
    wrapped session can have its own audit log.
    """

    argv: tuple[str, ...]
    env: dict[str, str] | None = None
    # Each channel's stderr goes to f"{stderr_path}.{n}" (None: discarded).
    stderr_path: str | None = None


Target = HttpTarget | StdioTarget


@dataclass(frozen=True)
class LoadSpec:
    target: Target
    concurrency: int
    calls: int | None = None
    duration_s: float | None = None
    warmup_calls: int = 20
    workload: str = "default"
    processes: int | None = None
    seed: int = 1
    timeout_s: float = 900.0

    def process_count(self) -> int:
        if self.processes is not None:
            return max(1, min(self.processes, self.concurrency))
        return max(1, min(self.concurrency, os.cpu_count() or 1, 4))


@dataclass
class WorkerResult:
    latencies: bytes = b""
    kinds: bytes = b""
    outcomes: dict[tuple[int, str], int] = field(default_factory=dict)
    t_start_ns: int = 0
    t_end_ns: int = 0
    cpu_ns: int = 0
    failures: list[str] = field(default_factory=list)
    extra_messages: int = 0


@dataclass
class LoadResult:
    spec: LoadSpec
    workload: wl.Workload
    calls: int
    wall_s: float
    latencies_ns: list[int]
    by_kind_ns: dict[str, list[int]]
    outcomes: dict[str, dict[str, int]]
    loadgen_cpu_s: float
    processes: int
    extra_messages: int
    failures: list[str]

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def latency(self) -> LatencySummary | None:
        return summarize(self.latencies_ns)

    def unexpected(self, *, enforcing: bool) -> dict[str, dict[str, int]]:
        """Outcomes that the kind's ``expect`` does not explain."""
        out: dict[str, dict[str, int]] = {}
        expect = {k.name: k.expect for k in self.workload.kinds}
        for kind, counts in self.outcomes.items():
            for outcome, n in counts.items():
                if outcome == "ok" and (expect[kind] != "deny" or not enforcing):
                    continue
                if outcome.startswith("rpc") and expect[kind] == "deny" and enforcing:
                    continue
                out.setdefault(kind, {})[outcome] = n
        return out


# ---------------------------------------------------------------- worker side


def _make_channel(target: Target, index: int, stderr_files: list[IO[bytes]]) -> Channel:
    if isinstance(target, HttpTarget):
        return HttpChannel(target.host, target.port, target.path)
    stderr: IO[bytes] | None = None
    if target.stderr_path is not None:
        stderr = open(f"{target.stderr_path}.{index}", "wb")  # noqa: SIM115 - closed at teardown
        stderr_files.append(stderr)
    argv = [a.replace("{channel}", str(index)) for a in target.argv]
    return StdioChannel(argv, stderr, child_env(target.env))


async def _run_loops(
    channels: list[Channel],
    workload: wl.Workload,
    schedules: list[list[int]],
    first_ids: list[int],
    recorder: Recorder,
    budget: Budget,
) -> tuple[list[str], list[int]]:
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    pending = len(channels)
    failures: list[str] = []

    def done(call_loop: CallLoop) -> None:
        nonlocal pending
        pending -= 1
        if call_loop.failure is not None:
            failures.append(str(call_loop.failure))
        if pending == 0 and not finished.done():
            finished.set_result(None)

    # Unique-argument kinds carry this run's random tag and the channel number,
    # so no two calls anywhere (any channel, process or run) share arguments.
    run_tag = os.urandom(3).hex().encode()
    loops = [
        CallLoop(
            ch,
            workload,
            schedules[i],
            recorder,
            budget,
            done,
            first_ids[i],
            b"%s-%d" % (run_tag, i),
        )
        for i, ch in enumerate(channels)
    ]
    for call_loop in loops:
        call_loop.start()
    if loops:
        await finished
    return failures, [cl.rpc_id for cl in loops]


def worker_main(
    spec: LoadSpec, first_channel: int, n_channels: int, share: int | None, conn: Connection
) -> None:
    """Entry point of one load process (spawned)."""
    # The parent owns the run: a terminal's Ctrl-C reaches the whole process
    # group, and the parent stops us itself (a KeyboardInterrupt here only
    # printed a traceback from inside the event loop).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    stderr_files: list[IO[bytes]] = []
    channels: list[Channel] = []
    try:
        workload = wl.by_name(spec.workload)
        schedules = [
            workload.schedule(spec.seed * 7919 + first_channel + i) for i in range(n_channels)
        ]
        for i in range(n_channels):
            channels.append(_make_channel(spec.target, first_channel + i, stderr_files))
        loop.run_until_complete(_setup(channels))
        ids = [0] * n_channels
        if spec.warmup_calls > 0:
            warm = Budget(spec.warmup_calls * n_channels, None)
            failures, ids = loop.run_until_complete(
                _run_loops(channels, workload, schedules, ids, Recorder(), warm)
            )
            if failures:
                raise LoadError(f"warm-up failed: {failures[0]}")
        pids = [ch.pid for ch in channels if isinstance(ch, StdioChannel)]
        conn.send(("ready", pids))
        if conn.recv() != "go":
            return
        result = loop.run_until_complete(
            _measure(spec, channels, workload, schedules, ids, share, conn)
        )
        conn.send(("done", result))
        conn.recv()  # "close"
    except BaseException as exc:  # noqa: BLE001 - a load process reports anything, then exits
        with contextlib.suppress(OSError):
            conn.send(("error", f"{exc!r}\n{traceback.format_exc()}"))
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(_teardown(channels))
        loop.close()
        for f in stderr_files:
            f.close()


async def _setup(channels: list[Channel]) -> None:
    async def one(ch: Channel) -> None:
        if isinstance(ch, HttpChannel):
            await ch.connect()
            await ch.initialize()
        elif isinstance(ch, StdioChannel):
            await ch.start()
            await ch.initialize()

    await asyncio.gather(*(one(ch) for ch in channels))


async def _teardown(channels: list[Channel]) -> None:
    await asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True)


async def _measure(
    spec: LoadSpec,
    channels: list[Channel],
    workload: wl.Workload,
    schedules: list[list[int]],
    first_ids: list[int],
    share: int | None,
    conn: Connection,
) -> WorkerResult:
    loop = asyncio.get_running_loop()
    recorder = Recorder()
    t_start = time.perf_counter_ns()
    deadline = None if spec.duration_s is None else t_start + int(spec.duration_s * 1e9)
    budget = Budget(share, deadline)

    def report() -> None:
        conn.send(("progress", len(recorder.latencies)))
        handle[0] = loop.call_later(0.5, report)

    handle = [loop.call_later(0.5, report)]
    cpu0 = time.process_time_ns()
    try:
        failures, _ = await _run_loops(channels, workload, schedules, first_ids, recorder, budget)
    finally:
        handle[0].cancel()
    cpu = time.process_time_ns() - cpu0
    return WorkerResult(
        latencies=recorder.latencies.tobytes(),
        kinds=recorder.kinds.tobytes(),
        outcomes=recorder.outcomes,
        t_start_ns=t_start,
        t_end_ns=recorder.last_ns or time.perf_counter_ns(),
        cpu_ns=cpu,
        failures=failures,
        extra_messages=sum(ch.extra_messages for ch in channels),
    )


# ---------------------------------------------------------------- parent side

Around = Callable[[list[int]], AbstractContextManager[Any]]
Progress = Callable[[int, float], None]


def run_load(
    spec: LoadSpec, *, progress: Progress | None = None, around: Around | None = None
) -> LoadResult:
    """Run one measured load against ``spec.target`` and merge the samples."""
    if (spec.calls is None) == (spec.duration_s is None):
        raise ValueError("give exactly one of calls and duration_s")
    workload = wl.by_name(spec.workload)
    n_proc = spec.process_count()
    per = [
        spec.concurrency // n_proc + (1 if i < spec.concurrency % n_proc else 0)
        for i in range(n_proc)
    ]
    shares: list[int | None] = [None] * n_proc
    if spec.calls is not None:
        shares = [spec.calls * p // spec.concurrency for p in per]
        shares[0] = (shares[0] or 0) + spec.calls - sum(s or 0 for s in shares)
    procs: list[subprocess.Popen[bytes]] = []
    conns: list[Connection] = []
    first = 0
    for i in range(n_proc):
        # A plain interpreter per load process (not multiprocessing's spawn, which
        # re-imports the caller's __main__), talking over an inherited socketpair.
        parent_sock, child_sock = socket.socketpair()
        fd = child_sock.fileno()
        argv = [sys.executable, "-m", "agentwall.benchtool.worker", "--worker-fd", str(fd)]
        procs.append(subprocess.Popen(argv, pass_fds=[fd], env=child_env()))
        child_sock.close()
        conn = Connection(parent_sock.detach())
        conn.send((spec, first, per[i], shares[i]))
        conns.append(conn)
        first += per[i]
    deadline = time.monotonic() + spec.timeout_s
    finished = False
    try:
        pids: list[int] = []
        for msg in _collect(conns, "ready", deadline):
            pids.extend(msg)
        results: list[WorkerResult] = []
        with around(pids) if around is not None else contextlib.nullcontext():
            t0 = time.monotonic()
            for c in conns:
                c.send("go")
            results = list(_collect(conns, "done", deadline, progress=progress, t0=t0))
        for c in conns:
            with contextlib.suppress(OSError):
                c.send("close")
        finished = True
    finally:
        # Closing our ends first unblocks a worker still waiting for "go".
        for c in conns:
            c.close()
        for proc in procs:
            if not finished:
                # Failed or interrupted: the measurement is void, and a load
                # process mid-run would otherwise go on to its end.
                proc.kill()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    return _merge(spec, workload, results, n_proc)


def _collect(
    conns: list[Connection],
    kind: str,
    deadline: float,
    *,
    progress: Progress | None = None,
    t0: float = 0.0,
) -> Iterator[Any]:
    waiting = set(range(len(conns)))
    counts = [0] * len(conns)
    out: dict[int, Any] = {}
    while waiting:
        left = deadline - time.monotonic()
        if left <= 0:
            raise LoadError(f"load processes did not report {kind!r} in time")
        ready = wait([conns[i] for i in waiting], timeout=min(left, 1.0))
        for i in [i for i in waiting if conns[i] in ready]:
            try:
                tag, payload = conns[i].recv()
            except EOFError:
                raise LoadError("a load process died") from None
            if tag == "error":
                raise LoadError(f"load process failed: {payload}")
            if tag == "progress":
                counts[i] = payload
                if progress is not None:
                    progress(sum(counts), time.monotonic() - t0)
                continue
            if tag != kind:
                raise LoadError(f"unexpected {tag!r} while waiting for {kind!r}")
            out[i] = payload
            waiting.discard(i)
    for i in range(len(conns)):
        yield out[i]


def _merge(
    spec: LoadSpec, workload: wl.Workload, results: list[WorkerResult], n_proc: int
) -> LoadResult:
    latencies: list[int] = []
    by_kind: dict[str, list[int]] = {k.name: [] for k in workload.kinds}
    outcomes: dict[str, dict[str, int]] = {}
    failures: list[str] = []
    for r in results:
        lat = array("q")
        lat.frombytes(r.latencies)
        kinds = array("B")
        kinds.frombytes(r.kinds)
        latencies.extend(lat)
        for value, kind in zip(lat, kinds, strict=True):
            by_kind[workload.kinds[kind].name].append(value)
        for (kind, outcome), n in r.outcomes.items():
            slot = outcomes.setdefault(workload.kinds[kind].name, {})
            slot[outcome] = slot.get(outcome, 0) + n
        failures.extend(r.failures)
    latencies.sort()
    for values in by_kind.values():
        values.sort()
    starts = [r.t_start_ns for r in results if r.latencies]
    ends = [r.t_end_ns for r in results if r.latencies]
    wall = (max(ends) - min(starts)) / 1e9 if starts else 0.0
    return LoadResult(
        spec=spec,
        workload=workload,
        calls=len(latencies),
        wall_s=wall,
        latencies_ns=latencies,
        by_kind_ns=by_kind,
        outcomes=outcomes,
        loadgen_cpu_s=sum(r.cpu_ns for r in results) / 1e9,
        processes=n_proc,
        extra_messages=sum(r.extra_messages for r in results),
        failures=failures,
    )
