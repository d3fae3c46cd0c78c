"""Shared-memory token buckets, identically for both backends."""

from __future__ import annotations

import pytest

from agentwall.cache import layout, tokens
from agentwall.cache.ratelimit import SharedBuckets

ONE = layout.TOKEN_ONE
SECOND = 1_000_000_000
RECLAIM = (60 * SECOND) >> layout.TICK_SHIFT


@pytest.fixture
def buckets(backend: str) -> SharedBuckets:
    return SharedBuckets.create(buckets=32, window=4, backend=backend)  # type: ignore[arg-type]


def take(b: SharedBuckets, key: int, rate: float, burst: float, now: int) -> int:
    return b.buckets.take(
        key, tokens.rate_to_q(rate), tokens.tokens_to_units(burst), ONE, now, RECLAIM
    )


def test_burst_then_refusal_then_refill(buckets: SharedBuckets) -> None:
    now = 100 * SECOND
    results = [take(buckets, 7, 10.0, 3, now) for _ in range(5)]
    assert results[:3] == [0, 0, 0]
    assert all(r > 0 for r in results[3:])
    assert 90_000_000 <= results[3] <= 110_000_000
    assert take(buckets, 7, 10.0, 3, now + results[3]) == 0


def test_keys_are_independent(buckets: SharedBuckets) -> None:
    now = 100 * SECOND
    assert take(buckets, 1, 1.0, 1, now) == 0
    assert take(buckets, 1, 1.0, 1, now) > 0
    assert take(buckets, 2, 1.0, 1, now) == 0


def test_peek_shows_the_word(buckets: SharedBuckets) -> None:
    now = 100 * SECOND
    assert buckets.buckets.peek(9) is None
    take(buckets, 9, 1.0, 4, now)
    word = buckets.buckets.peek(9)
    assert word is not None
    assert word >> 32 == 3 * ONE


def test_full_window_refuses_until_a_bucket_is_idle(backend: str) -> None:
    b = SharedBuckets.create(buckets=4, window=4, backend=backend)  # type: ignore[arg-type]
    now = 100 * SECOND
    for k in range(1, 5):
        assert take(b, k, 1.0, 1, now) == 0
    assert take(b, 5, 1.0, 1, now) == SECOND  # full: refused, fail closed
    assert b.buckets.stats()["full"] == 1
    # After the reclaim delay an idle (hence full) bucket is re-keyed.
    later = now + 61 * SECOND
    assert take(b, 1, 1.0, 1, later) == 0  # key 1 stays busy
    assert take(b, 5, 1.0, 1, later) == 0
    assert take(b, 5, 1.0, 1, later) > 0


def test_key_zero_is_refused(buckets: SharedBuckets) -> None:
    with pytest.raises(ValueError, match="non-zero"):
        take(buckets, 0, 1.0, 1, 0)


def test_both_backends_agree_on_a_trace(native_backend: str) -> None:
    pairs = [
        SharedBuckets.create(buckets=16, window=4, backend=name)  # type: ignore[arg-type]
        for name in ("python", native_backend)
    ]
    now = 50 * SECOND
    for i in range(400):
        now += (i * 7919) % 40_000_000
        key = 1 + (i * 31) % 23
        answers = [take(p, key, 25.0, 2 + key % 3, now) for p in pairs]
        assert answers[0] == answers[1], i
