"""The msgspec Structs of ``agentwall.io.pool``, kept uncompiled (agentwall/compiled.py)."""

from __future__ import annotations

import msgspec


class ReloadResult(msgspec.Struct, frozen=True):
    ok: bool
    policy_hash: str
    previous_hash: str
    # Why a failed reload failed (the old policy keeps running).
    error: str | None = None
    changed: bool = False


class WorkerStatus(msgspec.Struct, frozen=True):
    slot: int
    pid: int
    ready: bool
    policy_hash: str
    queued: int
    evaluated: int


class PoolHealth(msgspec.Struct, frozen=True):
    ready: bool
    policy_hash: str
    workers: tuple[WorkerStatus, ...]
    workers_wanted: int
    zygote_alive: bool
    closing: bool


class PoolMetrics(msgspec.Struct, frozen=True):
    calls: int
    cache_hits: int
    cache_misses: int
    # Final verdicts ("allow", "deny", ...), whatever produced them.
    decisions: dict[str, int]
    # Denials the pool made itself, by category (timeouts, crashes, rate limits...).
    pool_denials: dict[str, int]
    latency_buckets_us: tuple[int, ...]
    latency_counts: tuple[int, ...]  # cumulative, one per bucket, then +Inf
    latency_sum_us: float
    workers_ready: int
    workers_wanted: int
    worker_restarts: int
    reloads_ok: int
    reloads_failed: int
