"""Percentiles from exact samples.

The load generator keeps every latency (8 bytes a call), so percentiles are
exact nearest-rank values over the merged samples of all load processes, not
estimates from per-process summaries.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from statistics import median
from typing import TypeVar

import msgspec


class LatencySummary(msgspec.Struct, frozen=True):
    """Latency in microseconds."""

    n: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float


Sample = TypeVar("Sample", int, float)


def percentile(sorted_samples: Sequence[Sample], q: float) -> Sample:
    """Nearest-rank percentile (``q`` in [0, 100]) of already sorted samples."""
    if not sorted_samples:
        raise ValueError("no samples")
    rank = max(1, math.ceil(q / 100 * len(sorted_samples)))
    return sorted_samples[min(rank, len(sorted_samples)) - 1]


def summarize(sorted_ns: Sequence[int]) -> LatencySummary | None:
    if not sorted_ns:
        return None
    return LatencySummary(
        n=len(sorted_ns),
        p50=percentile(sorted_ns, 50) / 1000,
        p95=percentile(sorted_ns, 95) / 1000,
        p99=percentile(sorted_ns, 99) / 1000,
        max=sorted_ns[-1] / 1000,
        mean=sum(sorted_ns) / len(sorted_ns) / 1000,
    )


def median_of(values: Sequence[float]) -> float:
    return float(median(values))


def timed_samples_ns(fn: Callable[[], object], n: int) -> list[int]:
    """Wall time of each of ``n`` calls of ``fn``, sorted."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    times.sort()
    return times


def timed_median_ns(fn: Callable[[], object], n: int) -> float:
    """Median wall time of ``n`` calls of ``fn`` (for interleaved comparisons)."""
    return float(median(timed_samples_ns(fn, n)))


class Interleaved:
    """Overhead of B over A from alternating rounds, two ways.

    ``ratios``: (B - A) / A at the median of each round; ``fast_ratios``: the
    same at the 10th percentile, which a neighbour's burst of CPU or disk use
    moves much less.  The gate takes the median of the first and the minimum
    of the second, and fails only when both are over the limit.
    """

    def __init__(self) -> None:
        self.ratios: list[float] = []
        self.fast_ratios: list[float] = []
        self.overheads_us: list[float] = []

    def round(self, a: Callable[[], object], b: Callable[[], object], n: int) -> None:
        sa, sb = timed_samples_ns(a, n), timed_samples_ns(b, n)
        ma, mb = float(median(sa)), float(median(sb))
        fa, fb = percentile(sa, 10), percentile(sb, 10)
        self.ratios.append((mb - ma) / ma)
        self.fast_ratios.append((fb - fa) / fa)
        self.overheads_us.append((mb - ma) / 1000)
