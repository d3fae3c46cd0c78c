"""End-to-end loopback benchmarks, on the same code as ``agentwall bench``.

- Round trips of single calls on one keep-alive session, direct to the fast
  upstream and through ``agentwall start`` (allowed, denied, 64 KiB).
- Interleaved direct/proxied rounds that give the CI gate its e2e figures:
  ``e2e_overhead_c1`` is the median over rounds of (proxied - direct) /
  direct at p50 for one client; ``e2e_throughput_cost_c64`` is direct calls/s
  over proxied calls/s at 64 clients (multi-process load, ``run_load``).
  Both are lower-is-better and are ratios measured in the same run, so a
  uniformly slow machine does not move them.
- The same over stdio: ``agentwall wrap`` around the stdio upstream.

The proxied tests skip while ``agentwall start`` / ``wrap`` are not in the tree.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from agentwall.benchtool.loadgen import HttpTarget, LoadSpec, run_load
from agentwall.benchtool.procs import FastUpstream, Proxy, has_module, key_env
from agentwall.benchtool.stats import Interleaved
from agentwall.benchtool.sync_client import SyncHttpSession, SyncStdioSession
from agentwall.benchtool.workload import default_mix

MIX = default_mix()
KINDS = {name: MIX.kinds[MIX.index(name)] for name in ("echo_tiny", "deny_tool", "echo_64k")}
ROUNDS = 7
CALLS_PER_ROUND = 150

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("kind", ["echo_tiny", "echo_64k"])
def test_roundtrip_direct(
    benchmark: BenchmarkFixture, direct_session: SyncHttpSession, kind: str
) -> None:
    status, message = benchmark(direct_session.call, KINDS[kind])
    assert status == 200
    assert "result" in message


@pytest.mark.parametrize("kind", ["echo_tiny", "deny_tool", "echo_64k"])
def test_roundtrip_proxied(
    benchmark: BenchmarkFixture, proxied_session: SyncHttpSession, kind: str
) -> None:
    status, message = benchmark(proxied_session.call, KINDS[kind])
    assert status == 200
    if KINDS[kind].expect == "deny":
        assert message["error"]["code"] == -32001
    else:
        assert "result" in message


def test_gate_overhead_c1(
    benchmark: BenchmarkFixture, direct_session: SyncHttpSession, proxied_session: SyncHttpSession
) -> None:
    kind = KINDS["echo_tiny"]
    found = Interleaved()

    def rounds() -> None:
        for _ in range(ROUNDS):
            found.round(
                lambda: direct_session.call(kind),
                lambda: proxied_session.call(kind),
                CALLS_PER_ROUND,
            )

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    benchmark.extra_info["overhead_p50_us_rounds"] = found.overheads_us
    benchmark.extra_info["gate"] = {"e2e_overhead_c1": statistics.median(found.ratios)}
    benchmark.extra_info["gate_min"] = {"e2e_overhead_c1": min(found.fast_ratios)}


def test_gate_throughput_c64(
    benchmark: BenchmarkFixture, fast_upstream: FastUpstream, bench_proxy: Proxy
) -> None:
    costs: list[float] = []
    figures: list[dict[str, float]] = []

    def rounds() -> None:
        for r in range(2):
            direct = run_load(
                LoadSpec(HttpTarget.from_url(fast_upstream.url), 64, duration_s=1.5, seed=r + 1)
            )
            proxied = run_load(
                LoadSpec(HttpTarget.from_url(bench_proxy.url), 64, duration_s=1.5, seed=r + 1)
            )
            assert proxied.failures == []
            assert proxied.unexpected(enforcing=True) == {}
            costs.append(direct.calls_per_s / proxied.calls_per_s)
            figures.append({"direct_cps": direct.calls_per_s, "proxied_cps": proxied.calls_per_s})

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    benchmark.extra_info["rounds"] = figures
    benchmark.extra_info["gate"] = {"e2e_throughput_cost_c64": statistics.median(costs)}
    benchmark.extra_info["gate_min"] = {"e2e_throughput_cost_c64": min(costs)}


# ------------------------------------------------------------------- stdio

STDIO_SERVER = (sys.executable, "-m", "agentwall.demo.stdio_server")


@pytest.fixture
def stdio_direct() -> Iterator[SyncStdioSession]:
    session = SyncStdioSession(STDIO_SERVER)
    yield session
    session.close()


@pytest.fixture
def stdio_wrapped(
    bench_workdir: object, bench_policy: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SyncStdioSession]:
    if not has_module("agentwall.cli.wrap"):
        pytest.skip("`agentwall wrap` is not in this tree yet")
    logdir = tmp_path_factory.mktemp("wrap")
    log = logdir / "audit.log"
    argv = (
        sys.executable,
        "-m",
        "agentwall",
        "wrap",
        "--policy",
        bench_policy,
        "--log-path",
        str(log),
        "--",
        *STDIO_SERVER,
    )
    session = SyncStdioSession(argv, env=key_env(logdir))
    yield session
    session.close()


def test_roundtrip_stdio_direct(
    benchmark: BenchmarkFixture, stdio_direct: SyncStdioSession
) -> None:
    _, message = benchmark(stdio_direct.call, KINDS["echo_tiny"])
    assert "result" in message


def test_roundtrip_stdio_wrapped(
    benchmark: BenchmarkFixture, stdio_wrapped: SyncStdioSession
) -> None:
    _, message = benchmark(stdio_wrapped.call, KINDS["echo_tiny"])
    assert "result" in message


def test_gate_stdio_overhead(
    benchmark: BenchmarkFixture, stdio_direct: SyncStdioSession, stdio_wrapped: SyncStdioSession
) -> None:
    kind = KINDS["echo_tiny"]
    found = Interleaved()

    def rounds() -> None:
        for _ in range(ROUNDS):
            found.round(
                lambda: stdio_direct.call(kind), lambda: stdio_wrapped.call(kind), CALLS_PER_ROUND
            )

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    benchmark.extra_info["overhead_p50_us_rounds"] = found.overheads_us
    benchmark.extra_info["gate"] = {"e2e_stdio_overhead": statistics.median(found.ratios)}
    benchmark.extra_info["gate_min"] = {"e2e_stdio_overhead": min(found.fast_ratios)}
