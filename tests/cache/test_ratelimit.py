"""RateLimiter: client, session and tool buckets, hints, and sharing across processes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from agentwall.cache.ratelimit import RateLimiter, RateSpec, RateVerdict, as_spec, bucket_key

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
        bucket_key("client", "a"),
        bucket_key("tool", "a"),
        bucket_key("session-tool", "a", "b"),
        bucket_key("session-tool", "ab", ""),
    }
    assert len(keys) == 5
    assert 0 not in keys


def test_limits_are_shared_across_processes(limiter: RateLimiter, forker: Forker) -> None:
    spec = RateSpec(1.0, 3)

    def child() -> list[bool]:
        return [limiter.check("shared", None, spec, None, T0).allowed for _ in range(2)]

    assert forker(child)(30.0) == [True, True]
    assert limiter.check("shared", None, spec, None, T0).allowed
    assert not limiter.check("shared", None, spec, None, T0).allowed


def test_client_bucket_spans_sessions(limiter: RateLimiter) -> None:
    # The re-initialize bypass: every fresh session has a full session bucket,
    # but all of them draw on the one client bucket.
    client, session = RateSpec(1.0, 3), RateSpec(1.0, 2)
    verdicts = [
        limiter.check(f"s{i}", "t", session, None, T0, client="peer:10.0.0.1", client_rate=client)
        for i in range(4)
    ]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    refused = verdicts[3]
    assert (refused.scope, refused.limit) == ("client", 1.0)
    assert 0.9 <= refused.retry_after_s <= 1.1
    # Another client is untouched; the refused one gets a token back after the hint.
    assert limiter.check("s9", "t", session, None, T0, client="peer:10.0.0.2", client_rate=client)
    later = T0 + int(refused.retry_after_s * 1e9)
    assert limiter.check("s5", "t", session, None, later, client="peer:10.0.0.1",
                         client_rate=client).allowed  # fmt: skip
    # Without a client rate, the same sessions are limited per session only.
    assert all(
        limiter.check(f"n{i}", "t", session, None, T0, client="peer:10.0.0.1").allowed
        for i in range(10)
    )


def test_client_is_taken_before_session_and_tool(limiter: RateLimiter) -> None:
    client, session, tool = RateSpec(1.0, 3), RateSpec(1.0, 1), RateSpec(1.0, 1)

    def check(sid: str, name: str) -> RateVerdict:
        return limiter.check(sid, name, session, tool, T0, client="c", client_rate=client)

    assert check("s", "a").allowed
    assert check("s", "b").scope == "session"  # ... after spending a client token
    assert check("s2", "a").scope == "tool"  # the last client token went here
    assert check("s3", "c").scope == "client"


def test_a_call_without_a_client_is_its_sessions_own_client(limiter: RateLimiter) -> None:
    # wrap: one agent per session.  The client bucket is still its own bucket
    # (its own rate and burst), keyed by the session.
    client, session = RateSpec(1.0, 2), RateSpec(1.0, 5)
    got = [limiter.check("w", "t", session, None, T0, client_rate=client) for _ in range(3)]
    assert [v.allowed for v in got] == [True, True, False]
    assert got[2].scope == "client"
    assert limiter.check("w2", "t", session, None, T0, client_rate=client).allowed


def test_client_bucket_is_shared_across_processes(limiter: RateLimiter, forker: Forker) -> None:
    client = RateSpec(1.0, 4)

    def child() -> list[bool]:
        return [
            limiter.check(f"child-{i}", None, None, None, T0, client="sub:i|alice",
                          client_rate=client).allowed
            for i in range(3)
        ]  # fmt: skip

    def check(sid: str) -> RateVerdict:
        return limiter.check(sid, None, None, None, T0, client="sub:i|alice", client_rate=client)

    assert forker(child)(30.0) == [True, True, True]
    assert check("parent-1").allowed
    refused = check("parent-2")
    assert (refused.allowed, refused.scope) == (False, "client")
