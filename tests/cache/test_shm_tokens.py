"""Token-bucket arithmetic: the C twin equals the Python one, and no sequence
of takes ever grants more than capacity plus what the rate refills."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentwall.cache import layout, tokens

TICK_NS = 1 << layout.TICK_SHIFT
M32 = 0xFFFFFFFF


def native_refill_take(word: int, tick: int, rate_q: int, cap: int, cost: int) -> tuple[int, int]:
    from agentwall.cache import _shmcache

    return _shmcache.refill_take(word, tick, rate_q, cap, cost)


@settings(max_examples=500, deadline=None)
@given(
    tokens_=st.integers(0, M32),
    last=st.integers(0, M32),
    tick=st.integers(0, M32),
    rate_q=st.integers(0, (1 << 63) - 1),
    cap=st.integers(1, M32),
    cost=st.integers(1, M32),
)
def test_native_arithmetic_equals_python(
    native_backend: str, tokens_: int, last: int, tick: int, rate_q: int, cap: int, cost: int
) -> None:
    word = tokens.pack(tokens_, last)
    assert native_refill_take(word, tick, rate_q, cap, cost) == tokens.refill_take(
        word, tick, rate_q, cap, cost
    )


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(0.01, 100_000),
    burst=st.floats(1, 10_000),
    gaps=st.lists(st.integers(0, 50_000_000), min_size=1, max_size=300),
    start=st.integers(0, 1 << 62),
)
def test_never_more_than_capacity_plus_refill(
    rate: float, burst: float, gaps: list[int], start: int
) -> None:
    rate_q = tokens.rate_to_q(rate)
    cap = tokens.tokens_to_units(burst)
    one = layout.TOKEN_ONE
    now = start
    word = tokens.pack(cap, tokens.now_tick(now))
    granted = 0
    for gap in gaps:
        now += gap
        word, retry = tokens.refill_take(word, tokens.now_tick(now), rate_q, cap, one)
        if not retry:
            granted += 1
        else:
            assert retry > 0
    elapsed_s = (now - start + TICK_NS) / 1e9
    assert granted * one <= cap + rate * elapsed_s * one + 1e-6


def test_retry_hint_is_when_a_token_is_back() -> None:
    rate_q = tokens.rate_to_q(10.0)  # one token per 100 ms
    cap = tokens.tokens_to_units(1)
    now = 5_000_000_000
    word = tokens.pack(cap, tokens.now_tick(now))
    word, retry = tokens.refill_take(word, tokens.now_tick(now), rate_q, cap, layout.TOKEN_ONE)
    assert retry == 0
    word2, retry = tokens.refill_take(word, tokens.now_tick(now), rate_q, cap, layout.TOKEN_ONE)
    assert word2 == word
    hint_ns = retry * TICK_NS
    assert 99_000_000 <= hint_ns <= 102_000_000
    later = tokens.now_tick(now + hint_ns)
    _, retry = tokens.refill_take(word, later, rate_q, cap, layout.TOKEN_ONE)
    assert retry == 0


def test_slow_rates_accumulate_fractions() -> None:
    """At 0.5 calls/s a take every 10 ms must still refill: the fraction gained
    per tick is carried over, not rounded away."""
    rate_q = tokens.rate_to_q(0.5)
    cap = tokens.tokens_to_units(1)
    now = 0
    word = tokens.pack(0, 0)
    granted_at = []
    for _ in range(500):  # 5 s of polling every 10 ms
        now += 10_000_000
        word, retry = tokens.refill_take(word, tokens.now_tick(now), rate_q, cap, layout.TOKEN_ONE)
        if not retry:
            granted_at.append(now)
    assert len(granted_at) == 2
    assert 2_000_000_000 <= granted_at[0] <= 2_010_000_000


def test_clock_skew_between_processes_never_refills() -> None:
    rate_q = tokens.rate_to_q(1000.0)
    cap = tokens.tokens_to_units(5)
    word = tokens.pack(0, 1000)
    # A process whose clock read is 3 ticks behind the last writer's.
    new, retry = tokens.refill_take(word, 997, rate_q, cap, layout.TOKEN_ONE)
    assert retry
    assert new == word


def test_wrapped_clock_restarts_without_minting_tokens() -> None:
    rate_q = tokens.rate_to_q(1000.0)
    cap = tokens.tokens_to_units(5)
    word = tokens.pack(0, 10)
    wrapped = (10 + (1 << 31) + 5) & M32
    _new, retry = tokens.refill_take(word, wrapped, rate_q, cap, layout.TOKEN_ONE)
    assert retry  # no refill from a wrapped difference


@pytest.mark.parametrize("rate", [0.0, -1.0, float("nan")])
def test_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        tokens.rate_to_q(rate)
