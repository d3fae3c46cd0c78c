"""Shared-memory decision table and token buckets: native (C) against the
pure-Python fallback, plus the DecisionCache layer on top.

Run:  .venv/bin/python -m pytest bench/bench_cache.py --benchmark-enable -q
Figures are per operation; the machine is shared, so compare medians and the
native/python ratio, not absolute times.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from typing import Any

import pytest

from agentwall.cache import layout, tokens
from agentwall.cache.backend import native_available
from agentwall.cache.ratelimit import RateLimiter, RateSpec, SharedBuckets
from agentwall.cache.shm import DecisionCache, SharedTable
from agentwall.core.canonical import canonical_json
from agentwall.types import Call, Decision

BACKENDS = ["native", "python"]
VALUE = b"v" * 300  # about the size of an encoded Decision


def _key(n: int) -> bytes:
    return hashlib.blake2b(n.to_bytes(8, "little"), digest_size=16).digest()


def _need(backend: str) -> None:
    if backend == "native" and not native_available():
        pytest.skip("native extension not built")


@pytest.fixture(params=BACKENDS)
def table(request: pytest.FixtureRequest) -> SharedTable:
    _need(request.param)
    shared = SharedTable.create(slots=16384, slot_size=512, backend=request.param)
    for n in range(8192):
        shared.table.insert(_key(n), VALUE, n)
    return shared


def test_lookup_hit(benchmark: Any, table: SharedTable) -> None:
    keys = itertools.cycle([_key(n) for n in range(0, 8192, 7)])
    lookup = table.table.lookup
    result = benchmark(lambda: lookup(next(keys), 1))
    assert result == VALUE


def test_lookup_miss(benchmark: Any, table: SharedTable) -> None:
    keys = itertools.cycle([_key(n) for n in range(100_000, 101_000)])
    lookup = table.table.lookup
    assert benchmark(lambda: lookup(next(keys), 1)) is None


def test_insert(benchmark: Any, table: SharedTable) -> None:
    keys = itertools.cycle([_key(n) for n in range(0, 16384, 3)])
    insert = table.table.insert
    assert benchmark(lambda: insert(next(keys), VALUE, 2)) in (1, 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rate_limit_take(benchmark: Any, backend: str) -> None:
    _need(backend)
    shared = SharedBuckets.create(buckets=4096, backend=backend)  # type: ignore[arg-type]
    rate_q = tokens.rate_to_q(1e6)
    cap = tokens.tokens_to_units(1000)
    reclaim = (60 * 10**9) >> layout.TICK_SHIFT
    keys = itertools.cycle(range(1, 257))
    take = shared.buckets.take
    benchmark(lambda: take(next(keys), rate_q, cap, layout.TOKEN_ONE, time.monotonic_ns(), reclaim))


@pytest.mark.parametrize("backend", BACKENDS)
def test_rate_limiter_check(benchmark: Any, backend: str) -> None:
    """The full per-call check the pool does: session and tool bucket."""
    _need(backend)
    limiter = RateLimiter.create(buckets=4096, backend=backend)  # type: ignore[arg-type]
    session, tool = RateSpec(1e6, 1000), RateSpec(1e6, 1000)
    sessions = itertools.cycle([f"session-{n}" for n in range(64)])
    verdict = benchmark(
        lambda: limiter.check(next(sessions), "search", session, tool, time.monotonic_ns())
    )
    assert verdict.allowed


@pytest.mark.parametrize("backend", BACKENDS)
def test_rate_limiter_check_with_client(benchmark: Any, backend: str) -> None:
    """As above plus the policy's client bucket (taken first): 64 sessions of 8 clients."""
    _need(backend)
    limiter = RateLimiter.create(buckets=4096, backend=backend)  # type: ignore[arg-type]
    rate = RateSpec(1e6, 1000)
    pairs = itertools.cycle([(f"session-{n}", f"peer:10.0.0.{n % 8}") for n in range(64)])

    def check() -> Any:
        session_id, client = next(pairs)
        return limiter.check(
            session_id, "search", rate, rate, time.monotonic_ns(), client=client, client_rate=rate
        )

    assert benchmark(check).allowed


def _call(n: int) -> Call:
    params = {"name": "read_file", "arguments": {"path": f"/workspace/src/file{n}.py"}}
    return Call(
        call_id=f"c{n}", session="s", transport="http", origin="client", kind="request",
        rpc_id=n, method="tools/call", target="read_file", params=params,
        params_json=canonical_json(params),
    )  # fmt: skip


DECISION = Decision(
    call_id="", verdict="allow", rule_id="tools.read_file", reason="allowed by tools.read_file",
    pointer=None, policy_hash="f" * 64, eval_ns=12_000,
)  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_decision_cache_hit(benchmark: Any, backend: str) -> None:
    """Key (blake2b over the call) + lookup + decode + relabel: the pool's hit path."""
    _need(backend)
    cache = DecisionCache.create(slots=4096, backend=backend)  # type: ignore[arg-type]
    calls = [_call(n) for n in range(512)]
    for c in calls:
        cache.store("f" * 64, c, DECISION, 0)
    cycle = itertools.cycle(calls)
    hit = benchmark(lambda: cache.lookup("f" * 64, next(cycle), 1))
    assert hit is not None
    assert hit.cached
