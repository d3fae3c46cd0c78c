"""The audit path's costs: sealing, verifying, and durable entries through the writer.

- ``test_seal_per_entry`` / ``test_verify_per_entry``: CPU per entry of the
  pure chain code (HMAC-SHA256 over ~600-byte canonical entries);
- ``test_append_durable``: one in-process ``AuditLog.append_batch`` of one
  entry (write + fdatasync + sealed head), the stdio wrapper's path;
- ``test_writer_loopback[C]``: the HTTP sidecar's path.  C concurrent
  submitters in one uvloop process share one ``AuditWriterClient`` to a real
  writer process over a Unix socket; each ``record`` returns only after the
  group-committed batch holding it is fdatasynced.  Reports durable entries/s,
  p50/p99 submit->ack and the writer's batch sizes; the raw fdatasync median
  measured in the same run is printed beside them for scale.

Run: ``.venv/bin/python -m pytest bench/bench_audit.py --benchmark-enable -q -s``.
The log lives in a temporary directory on the default file system (where
fdatasync is real), never on tmpfs.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from pytest_benchmark.fixture import BenchmarkFixture

from agentwall.audit.chain import GENESIS, ChainVerifier, seal_batch
from agentwall.audit.keys import AuditKey
from agentwall.audit.log import AuditLog
from agentwall.io.audit_writer import AuditWriterClient, AuditWriterProcess, WriterStats
from agentwall.types import AuditEvent

pytestmark = pytest.mark.timeout(900)

KEY = AuditKey(bytes(range(32)), source="bench")
EVENT = AuditEvent(
    event="decision",
    session="sess-3f2a9c0d1e",
    transport="http",
    call_id="c-0123456789abcdef",
    rpc_id=17,
    method="tools/call",
    target="read_file",
    decision="allow",
    rule_id="tools[read_file]",
    reason="tool 'read_file' is allowed",
    args_sha256="ab" * 32,
    latency_us=123,
    policy_hash="cd" * 32,
)
VERIFY_LINES = 1000


def test_seal_per_entry(benchmark: BenchmarkFixture) -> None:
    batch = [EVENT]
    benchmark(seal_batch, KEY.mac_key, GENESIS, batch, 1_700_000_000_000_000)


def test_seal_per_entry_in_batches_of_64(benchmark: BenchmarkFixture) -> None:
    batch = [EVENT] * 64
    benchmark.extra_info["entries_per_call"] = 64
    benchmark(seal_batch, KEY.mac_key, GENESIS, batch, 1_700_000_000_000_000)


def test_verify_per_entry(benchmark: BenchmarkFixture) -> None:
    tip = GENESIS
    lines: list[bytes] = []
    for _ in range(VERIFY_LINES):
        sealed = seal_batch(KEY.mac_key, tip, [EVENT], 1_700_000_000_000_000)
        lines.append(sealed.data[:-1])
        tip = sealed.tip
    keys = {KEY.key_id: KEY.mac_key}

    def verify() -> None:
        verifier = ChainVerifier(keys)
        verifier.feed_many(lines)
        assert verifier.finish().entries == VERIFY_LINES

    benchmark.extra_info["entries_per_call"] = VERIFY_LINES
    benchmark(verify)


@pytest.fixture
def disk_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: keep it on the real disk whatever TMPDIR says.
    with tempfile.TemporaryDirectory(prefix="agentwall-bench-audit-", dir=os.getcwd()) as d:
        yield Path(d)


def test_append_durable(benchmark: BenchmarkFixture, disk_dir: Path) -> None:
    with AuditLog.open(disk_dir / "audit.log", KEY) as log:
        benchmark(log.append_batch, [EVENT])


def _fdatasync_p50_us(directory: Path, samples: int = 200) -> float:
    fd = os.open(directory / "probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times = []
    try:
        for _ in range(samples):
            os.write(fd, b"x" * 600 + b"\n")
            started = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
    return statistics.median(times) * 1e6


def _raw_floor_p50_us(directory: Path, samples: int = 400) -> float:
    """The floor for any separate durable writer: a child process that reads
    one byte, appends a line, fdatasyncs and answers, timed round trip from
    here.  No Python framing, sealing or batching."""
    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        parent.close()
        fd = os.open(directory / "floor", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        while child.recv(1):
            os.write(fd, b"x" * 600 + b"\n")
            os.fdatasync(fd)
            child.send(b"k")
        os._exit(0)
    child.close()
    times = []
    try:
        for _ in range(samples):
            started = time.perf_counter()
            parent.send(b"r")
            parent.recv(1)
            times.append(time.perf_counter() - started)
    finally:
        parent.close()
        os.waitpid(pid, 0)
    return statistics.median(times) * 1e6


def _percentile(sorted_values: list[float], pct: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))]


async def _load(
    socket_path: Path, concurrency: int, total: int, max_seconds: float
) -> tuple[list[float], float, WriterStats, WriterStats]:
    latencies: list[float] = []
    async with AuditWriterClient(socket_path, deadline_s=30.0) as client:
        # warm up the connection and the writer
        await asyncio.gather(*(client.record(EVENT) for _ in range(concurrency)))
        before = await client.writer_stats()
        per_task = max(1, total // concurrency)
        stop_at = time.perf_counter() + max_seconds

        async def submitter() -> None:
            clock = time.perf_counter
            for _ in range(per_task):
                started = clock()
                await client.record(EVENT)
                now = clock()
                latencies.append(now - started)
                if now > stop_at:
                    return

        started = time.perf_counter()
        await asyncio.gather(*(submitter() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        after = await client.writer_stats()
    return latencies, elapsed, before, after


def _batch_summary(before: WriterStats, after: WriterStats) -> dict[str, Any]:
    counts = [
        a - b
        for a, b in zip(after.log.batch_size_counts, before.log.batch_size_counts, strict=True)
    ]
    bounds = [*after.log.batch_size_buckets, "inf"]
    batches = after.log.batches - before.log.batches
    entries = after.log.entries - before.log.entries
    fsync_us = (after.log.fsync_us_sum - before.log.fsync_us_sum) / max(1, batches)
    return {
        "batches": batches,
        "mean_batch": entries / max(1, batches),
        "batch_hist": {f"<={b}": c for b, c in zip(bounds, counts, strict=True) if c},
        "mean_fsync_us": fsync_us,
    }


@pytest.mark.parametrize("concurrency", [1, 16, 64])
def test_writer_loopback(benchmark: BenchmarkFixture, disk_dir: Path, concurrency: int) -> None:
    key_file = disk_dir / "audit.key"
    key_file.write_text(KEY.secret.hex() + "\n")
    key_file.chmod(0o600)
    writer = AuditWriterProcess(disk_dir / "audit.log", key_file=key_file)
    writer.start()
    total = {1: 3000, 16: 16000, 64: 32000}[concurrency]
    results: dict[str, Any] = {}

    def run_once() -> None:
        latencies, elapsed, before, after = uvloop.run(
            _load(writer.socket_path, concurrency, total, max_seconds=60.0)
        )
        latencies.sort()
        results.update(
            entries=len(latencies),
            entries_per_s=len(latencies) / elapsed,
            p50_us=_percentile(latencies, 50) * 1e6,
            p99_us=_percentile(latencies, 99) * 1e6,
            **_batch_summary(before, after),
        )

    try:
        benchmark.pedantic(run_once, rounds=1, iterations=1)
    finally:
        writer.stop()
        writer.cleanup()
    results["fdatasync_p50_us_same_run"] = _fdatasync_p50_us(disk_dir)
    results["raw_floor_p50_us_same_run"] = _raw_floor_p50_us(disk_dir)
    benchmark.extra_info.update(results)
    print(
        f"\nwriter loopback c={concurrency}: {results['entries']} durable entries, "
        f"{results['entries_per_s']:,.0f}/s, submit->ack p50 {results['p50_us']:.0f} us "
        f"p99 {results['p99_us']:.0f} us, mean batch {results['mean_batch']:.1f} "
        f"({results['batches']} fsyncs, mean {results['mean_fsync_us']:.0f} us), "
        f"batch sizes {results['batch_hist']}; same disk now: fdatasync p50 "
        f"{results['fdatasync_p50_us_same_run']:.0f} us, bare process round trip with "
        f"fdatasync p50 {results['raw_floor_p50_us_same_run']:.0f} us"
    )
