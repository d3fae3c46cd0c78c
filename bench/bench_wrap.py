"""Added latency of ``agentwall wrap`` per call over a direct stdio session.

Both sessions talk to the same stdio upstream (``agentwall.demo.stdio_server``)
with the same synchronous client; each call is one request line and one
response line.  Direct and wrapped calls are measured in alternating blocks in
the same run, so machine noise hits both alike.  Every wrapped call is
evaluated and gets a durable (fdatasynced) audit entry before it is forwarded.

``audit_dir``:
- ``disk``: the log on the test's tmp directory (ext4 here): what users get;
- ``tmpfs``: the log on /dev/shm, where fdatasync costs ~nothing: the same
  path minus the disk flush, to show where the time goes.

``test_data_path_in_process`` times wrap's own per-call work without pipes
or processes (so without the scheduler noise of three processes on a shared
machine): one host request line framed, parsed, judged, sealed, written and
fdatasynced to a log on /dev/shm, and forwarded; one server response line
framed, parsed and forwarded.  It is the part of the added latency that this
code controls; the rest is the fdatasync itself and two extra pipe hops.

Run: ``.venv/bin/python -m pytest bench/bench_wrap.py --benchmark-enable -q -s``
(``-s`` prints the p50/p99 table; the figures are also in ``extra_info``).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from agentwall.audit.keys import AuditKey
from agentwall.audit.log import AuditLog
from agentwall.benchtool.stats import percentile
from agentwall.benchtool.sync_client import SyncStdioSession
from agentwall.benchtool.workload import default_mix
from agentwall.io.stdio_wrap import StdioWrap, WrapConfig
from agentwall.policy import load_policy

pytestmark = pytest.mark.timeout(600)

MIX = default_mix()
ECHO = MIX.kinds[MIX.index("echo_tiny")]
DENY = MIX.kinds[MIX.index("deny_tool")]
SERVER = (sys.executable, "-m", "agentwall.demo.stdio_server")
POLICY = str(Path(__file__).resolve().parents[1] / "agentwall" / "data" / "bench-policy.yaml")
BLOCKS = 20
CALLS_PER_BLOCK = 100
WARMUP = 200


def _wrapped(log_dir: Path) -> SyncStdioSession:
    key = log_dir / "audit.key"
    key.write_text("ef" * 32 + "\n")
    key.chmod(0o600)
    argv = (
        sys.executable, "-m", "agentwall", "wrap",
        "--policy", POLICY,
        "--log-path", str(log_dir / "audit.log"),
        "--audit-key-file", str(key),
        "--", *SERVER,
    )  # fmt: skip
    return SyncStdioSession(argv)


@pytest.fixture(params=["disk", "tmpfs"])
def sessions(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, SyncStdioSession, SyncStdioSession]]:
    if request.param == "tmpfs":
        if not Path("/dev/shm").is_dir():
            pytest.skip("no /dev/shm")
        log_dir = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="aw-bench-"))
    else:
        log_dir = tmp_path
    direct = SyncStdioSession(SERVER)
    wrapped = _wrapped(log_dir)
    try:
        yield request.param, direct, wrapped
    finally:
        direct.close()
        wrapped.close()
        if request.param == "tmpfs":
            for path in log_dir.iterdir():
                path.unlink()
            log_dir.rmdir()


def _times_us(session: SyncStdioSession, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        _, message = session.call(ECHO)
        out.append((time.perf_counter_ns() - t0) / 1000)
        assert "result" in message
    return out


def _pct(values: list[float], q: float) -> float:
    return percentile(sorted(values), q * 100)


def test_added_latency_per_call(
    benchmark: BenchmarkFixture, sessions: tuple[str, SyncStdioSession, SyncStdioSession]
) -> None:
    where, direct, wrapped = sessions
    _times_us(direct, WARMUP)
    _times_us(wrapped, WARMUP)
    d: list[float] = []
    w: list[float] = []
    block_deltas: list[float] = []
    for _ in range(BLOCKS):
        bd = _times_us(direct, CALLS_PER_BLOCK)
        bw = _times_us(wrapped, CALLS_PER_BLOCK)
        d += bd
        w += bw
        block_deltas.append(statistics.median(bw) - statistics.median(bd))
    figures = {
        "direct_p50_us": _pct(d, 0.5),
        "direct_p99_us": _pct(d, 0.99),
        "wrapped_p50_us": _pct(w, 0.5),
        "wrapped_p99_us": _pct(w, 0.99),
        "added_p50_us": _pct(w, 0.5) - _pct(d, 0.5),
        "added_p99_us": _pct(w, 0.99) - _pct(d, 0.99),
        "added_p50_median_of_blocks_us": statistics.median(block_deltas),
        "calls_each": len(d),
    }
    benchmark.extra_info.update({k: round(v, 1) for k, v in figures.items()})
    print(f"\nwrap, audit on {where}: " + ", ".join(f"{k}={v:.1f}" for k, v in figures.items()))
    # pytest-benchmark's own statistics, for the wrapped round trip.
    benchmark.pedantic(wrapped.call, args=(ECHO,), rounds=300, iterations=1)


def test_denied_call_round_trip(
    benchmark: BenchmarkFixture, sessions: tuple[str, SyncStdioSession, SyncStdioSession]
) -> None:
    """A denial is answered by wrap itself (after its audit entry is durable)."""
    _, _direct, wrapped = sessions
    _, message = benchmark.pedantic(wrapped.call, args=(DENY,), rounds=300, iterations=1)
    assert message["error"]["code"] == -32001


class _Sink:
    """Stands in for a pipe: accepts every line (what ``_Out`` returns)."""

    def __init__(self) -> None:
        self.lines = 0

    def write(self, line: bytes) -> bool:
        self.lines += 1
        return True

    def buffered(self) -> int:
        return 0

    def close(self) -> None:
        pass


def test_data_path_in_process(benchmark: BenchmarkFixture) -> None:
    """One call through wrap's data path, in-process: request in (parse,
    judge, durable audit entry, forward) and response out (parse, forward)."""
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    log_dir = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="aw-bench-"))
    log = AuditLog.open(log_dir / "audit.log", AuditKey(bytes.fromhex("ef" * 32), source="bench"))
    wrap = StdioWrap(WrapConfig(command=("true",)), policy=load_policy(POLICY), audit=log)
    server, host = _Sink(), _Sink()
    wrap._server_in = server  # type: ignore[assignment]
    wrap._host = host  # type: ignore[assignment]
    rpc_id = iter(range(1, 10**9))

    def one_call() -> None:
        n = next(rpc_id)
        wrap._on_host_data(ECHO.body(n, b"b") + b"\n")
        wrap._on_server_data(
            b'{"jsonrpc":"2.0","id":%d,"result":{"content":[{"type":"text","text":"b"}]}}\n' % n
        )

    try:
        for _ in range(WARMUP):
            one_call()
        benchmark.pedantic(one_call, rounds=3000, iterations=1, warmup_rounds=100)
        # Every request reached the server and every response the host.
        assert server.lines == host.lines == WARMUP + 3100
        assert log.stats().entries == WARMUP + 3100
    finally:
        log.close()
        for path in log_dir.iterdir():
            path.unlink()
        log_dir.rmdir()
