"""Token-bucket arithmetic on one packed 64-bit word, shared by both backends.

A bucket is ``tokens << 32 | tick``: tokens in Q20.12 fixed point, tick the
refill clock in units of 2**20 ns, modulo 2**32.  Everything is integer math,
rounded so that a bucket never grants more than ``capacity + rate * elapsed``
(plus one tick of clock quantisation): gains round down, and the refill clock
is advanced by the *rounded-up* time those gains cost, so a fraction of a token
carries over to the next refill instead of being lost or given away.

The C backend repeats this function line for line (``refill_take`` in
``native/shmcache/shmcache.c``); ``tests/cache`` runs both against each other.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Final

from agentwall.cache.layout import MAX_TOKEN_UNITS, RATE_SHIFT, TICK_SHIFT, TOKEN_ONE

M32: Final = 0xFFFFFFFF
# "now - last" is taken modulo 2**32.  Within 2**12 ticks (~4 s) below zero it
# is clock skew: another process read the clock a little before the last writer
# but took after it, so there is no refill (never a huge one).  Any other value
# at or above 2**31 means the 32-bit clock wrapped after a long idle spell: the
# refill clock restarts from now without a refill (restrictive, never generous:
# a caller mixing up clocks must not be able to mint tokens).
_HALF: Final = 1 << 31
_SKEW: Final = (1 << 32) - (1 << 12)
NO_REFILL_RETRY_TICKS: Final = M32


def rate_to_q(calls_per_second: float) -> int:
    """Token units per tick, scaled by 2**32, rounded down."""
    if not calls_per_second > 0:
        raise ValueError(f"rate must be positive, not {calls_per_second!r}")
    exact = Fraction(calls_per_second) * TOKEN_ONE * (1 << TICK_SHIFT) * (1 << RATE_SHIFT)
    return min(int(exact / 1_000_000_000), (1 << 63) - 1)


def tokens_to_units(tokens: float) -> int:
    """Capacity or cost in token units, clamped to what 32 bits can hold."""
    return max(1, min(MAX_TOKEN_UNITS, int(Fraction(tokens) * TOKEN_ONE)))


def now_tick(now_ns: int) -> int:
    return (now_ns >> TICK_SHIFT) & M32


def pack(tokens: int, tick: int) -> int:
    return (tokens << 32) | (tick & M32)


def refill_take(word: int, tick: int, rate_q: int, capacity: int, cost: int) -> tuple[int, int]:
    """One take at ``tick`` against ``word``.

    Returns ``(new_word, 0)`` when allowed, or ``(word, retry_ticks)`` with
    ``retry_ticks > 0`` when refused (the word is then left as it was: a refusal
    changes nothing, so it need not be written back).
    """
    tokens = word >> 32
    last = word & M32
    elapsed = (tick - last) & M32
    if elapsed >= _SKEW:
        elapsed = 0
    elif elapsed >= _HALF:
        last = tick
        elapsed = 0
    if tokens > capacity:
        tokens = capacity
    if elapsed and rate_q:
        gained = (elapsed * rate_q) >> RATE_SHIFT
        if tokens + gained >= capacity:
            tokens = capacity
            last = tick
        elif gained:
            charged = -(-(gained << RATE_SHIFT) // rate_q)
            tokens += gained
            last = (last + charged) & M32
    if tokens >= cost:
        return pack(tokens - cost, last), 0
    if not rate_q:
        return word, NO_REFILL_RETRY_TICKS
    need_ticks = -(-((cost - tokens) << RATE_SHIFT) // rate_q)
    waited = (tick - last) & M32
    if waited >= _SKEW:
        waited = 0
    return word, min(M32, max(1, need_ticks - waited))


def idle_ticks(word: int, tick: int) -> int:
    """Ticks since the bucket's refill clock (0 when it is just ahead: skew)."""
    elapsed = (tick - (word & M32)) & M32
    return 0 if elapsed >= _SKEW else elapsed
