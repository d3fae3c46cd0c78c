"""The evaluator pool's call path: IPC round trip to a forked worker, the
decision-cache hit path, and in-process evaluation for reference.

Run:  .venv/bin/python -m pytest bench/bench_pool.py --benchmark-enable -q
Each round runs BATCH calls inside one uvloop; the per-call figure is the
round time divided by BATCH (``extra_info["per_call_us"]`` holds the median).
The machine is shared: compare medians and ratios, not absolute times.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from agentwall.cache.shm import DecisionCache
from agentwall.core.canonical import canonical_json
from agentwall.io.pool import EvaluatorPool
from agentwall.policy import evaluate, load_policy
from agentwall.types import Call

BATCH = 200
POLICY = """
version: "2"
default_action: deny
tools:
  - name: read_file
    action: allow
    parameters:
      - {name: path, type: string, required: true, within: ["/workspace"]}
"""


def _call(n: int) -> Call:
    params = {"name": "read_file", "arguments": {"path": "/workspace/src/main.py"}}
    return Call(
        call_id=f"c{n}", session="s", transport="http", origin="client", kind="request",
        rpc_id=n, method="tools/call", target="read_file", params=params,
        params_json=canonical_json(params),
    )  # fmt: skip


CALLS = [_call(n) for n in range(BATCH)]


class Rig:
    def __init__(self, path: Path, *, workers: int, cache: DecisionCache | None) -> None:
        self.pool = EvaluatorPool.start(
            path, workers=workers, cache=cache, unsafe_allow_threads=threading.active_count() > 1
        )
        self.runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        self.runner.run(self.pool.attach())

    def sequential(self) -> None:
        async def batch() -> None:
            for c in CALLS:
                d = await self.pool.evaluate(c)
                assert d.verdict == "allow", d

        self.runner.run(batch())

    def concurrent(self, width: int) -> None:
        async def one(offset: int) -> None:
            for c in CALLS[offset::width]:
                d = await self.pool.evaluate(c)
                assert d.verdict == "allow", d

        async def batch() -> None:
            await asyncio.gather(*(one(i) for i in range(width)))

        self.runner.run(batch())

    def close(self) -> None:
        try:
            self.runner.run(self.pool.close())
        finally:
            self.pool.terminate()
            self.runner.close()


@pytest.fixture(scope="module")
def policy_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench_pool") / "policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture(scope="module")
def uncached(policy_path: Path) -> Iterator[Rig]:
    rig = Rig(policy_path, workers=2, cache=None)
    yield rig
    rig.close()


@pytest.fixture(scope="module")
def cached(policy_path: Path) -> Iterator[Rig]:
    rig = Rig(policy_path, workers=2, cache=DecisionCache.create(slots=4096))
    yield rig
    rig.close()


def _per_call(benchmark: Any) -> None:
    stats = benchmark.stats.stats
    benchmark.extra_info["per_call_us"] = round(stats.median / BATCH * 1e6, 2)
    benchmark.extra_info["per_call_p99_us_of_rounds"] = round(stats.max / BATCH * 1e6, 2)


def test_ipc_round_trip_sequential(benchmark: Any, uncached: Rig) -> None:
    """One call at a time through a worker: parent encode, socket write, worker
    decode + evaluate + encode, socket read, parent decode."""
    uncached.sequential()  # warm
    benchmark.pedantic(uncached.sequential, rounds=30, iterations=1)
    _per_call(benchmark)


def test_ipc_concurrent_64(benchmark: Any, uncached: Rig) -> None:
    """64 calls in flight over 2 workers: amortised cost per call."""
    uncached.concurrent(64)
    benchmark.pedantic(uncached.concurrent, args=(64,), rounds=30, iterations=1)
    _per_call(benchmark)


def test_cache_hit_evaluate(benchmark: Any, cached: Rig) -> None:
    """pool.evaluate answered from the shared-memory cache (no worker)."""
    cached.sequential()  # fills the cache: every call has the same arguments
    benchmark.pedantic(cached.sequential, rounds=30, iterations=1)
    assert cached.pool.metrics().cache_hits >= 30 * BATCH
    _per_call(benchmark)


def test_in_process_evaluate(benchmark: Any, policy_path: Path) -> None:
    """For reference: the policy evaluator alone, in this process."""
    policy = load_policy(policy_path)

    def batch() -> None:
        now = time.time_ns()
        for c in CALLS:
            evaluate(policy, c, now)

    benchmark.pedantic(batch, rounds=30, iterations=1)
    _per_call(benchmark)
