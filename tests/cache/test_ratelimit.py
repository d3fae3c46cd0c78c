"""RateLimiter: session and tool buckets, hints, and sharing across processes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from agentwall.cache.ratelimit import RateLimiter, RateSpec, as_spec, bucket_key

Forker = Callable[[Callable[[], Any]], Callable[[float], Any]]
SECOND = 1_000_000_000
T0 = 1000 * SECOND


class PolicyRate(msgspec.Struct, frozen=True):
    """The shape of the policy's RateLimit."""

    calls_per_second: float
    burst: int | None = None


@pytest.fixture
def limiter(backend: str) -> RateLimiter:
    return RateLimiter.create(buckets=256, backend=backend)  # type: ignore[arg-type]


def test_as_spec_accepts_what_a_policy_gives() -> None:
    assert as_spec(None) is None
    assert as_spec(5) == RateSpec(5.0)
    assert as_spec(PolicyRate(2.5, 10)) == RateSpec(2.5, 10.0)
    assert as_spec(PolicyRate(2.5)) == RateSpec(2.5)
    assert as_spec(0) is None
    assert as_spec(float("inf")) is None
    assert RateSpec(0.2).capacity == 1.0
    assert RateSpec(20).capacity == 20.0
    assert RateSpec(20, 3).capacity == 3.0


def test_session_limit_with_retry_hint(limiter: RateLimiter) -> None:
    spec = RateSpec(2.0)  # burst 2
    verdicts = [limiter.check("s1", "t", spec, None, T0) for _ in range(3)]
    assert [v.allowed for v in verdicts] == [True, True, False]
    refused = verdicts[2]
    assert refused.scope == "session"
    assert refused.limit == 2.0
    assert 0.45 <= refused.retry_after_s <= 0.55
    assert limiter.check("s1", "t", spec, None, T0 + int(refused.retry_after_s * 1e9)).allowed
    assert limiter.check("s2", "t", spec, None, T0).allowed  # another session


def test_tool_limit_is_global_by_default(limiter: RateLimiter) -> None:
    spec = RateSpec(1.0)
    assert limiter.check("s1", "search", None, spec, T0).allowed
    refused = limiter.check("s2", "search", None, spec, T0)
    assert not refused.allowed
    assert refused.scope == "tool"
    assert limiter.check("s2", "fetch", None, spec, T0).allowed


def test_tool_limit_per_session_scope(backend: str) -> None:
    limiter = RateLimiter.create(buckets=64, backend=backend, tool_scope="session")  # type: ignore[arg-type]
    spec = RateSpec(1.0)
    assert limiter.check("s1", "search", None, spec, T0).allowed
    assert limiter.check("s2", "search", None, spec, T0).allowed
    assert not limiter.check("s1", "search", None, spec, T0).allowed


def test_session_token_is_spent_when_the_tool_refuses(limiter: RateLimiter) -> None:
    session, tool = RateSpec(10.0, 2), RateSpec(1.0)
    assert limiter.check("s", "a", session, tool, T0).allowed
    assert not limiter.check("s", "a", session, tool, T0).allowed  # tool refuses
    refused = limiter.check("s", "b", session, tool, T0)  # session now empty
    assert not refused.allowed
    assert refused.scope == "session"


def test_no_rates_means_no_limit(limiter: RateLimiter) -> None:
    assert all(limiter.check("s", "t", None, None, T0).allowed for _ in range(100))


def test_bucket_keys_do_not_collide_across_kinds() -> None:
    keys = {
        bucket_key("session", "a"),
        bucket_key("tool", "a"),
        bucket_key("session-tool", "a", "b"),
        bucket_key("session-tool", "ab", ""),
    }
    assert len(keys) == 4
    assert 0 not in keys


def test_limits_are_shared_across_processes(limiter: RateLimiter, forker: Forker) -> None:
    spec = RateSpec(1.0, 3)

    def child() -> list[bool]:
        return [limiter.check("shared", None, spec, None, T0).allowed for _ in range(2)]

    assert forker(child)(30.0) == [True, True]
    assert limiter.check("shared", None, spec, None, T0).allowed
    assert not limiter.check("shared", None, spec, None, T0).allowed
