"""Several real processes hammering the same keys of one shared region.

Every value written carries its own key and a digest, so a torn read (half of
one write, half of another, or a value under the wrong key) cannot go
unnoticed; buckets shared by all processes must never grant more than
capacity plus what the rate refilled over the whole run.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from agentwall.cache import layout, tokens
from agentwall.cache.ratelimit import SharedBuckets
from agentwall.cache.shm import SharedTable

Forker = Callable[[Callable[[], Any]], Callable[[float], Any]]
PROCESSES = 4
RUN_SECONDS = 1.0
MAX_OPS = 200_000


def key(n: int) -> bytes:
    return hashlib.blake2b(n.to_bytes(8, "little"), digest_size=16).digest()


def make_value(k: bytes, counter: int, rng: random.Random) -> bytes:
    body = k + counter.to_bytes(8, "little") + os.getpid().to_bytes(4, "little")
    body += bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 150)))
    return body + hashlib.blake2b(body, digest_size=8).digest()


def value_ok(k: bytes, value: bytes) -> bool:
    body, digest = value[:-8], value[-8:]
    return body[:16] == k and hashlib.blake2b(body, digest_size=8).digest() == digest


@pytest.mark.timeout(60)
def test_no_torn_reads_under_contention(backend: str, forker: Forker) -> None:
    shared = SharedTable.create(slots=32, slot_size=256, window=4, backend=backend)  # type: ignore[arg-type]
    keys = [key(n) for n in range(48)]  # more keys than slots: evictions too

    def hammer() -> dict[str, int]:
        rng = random.Random(os.getpid())
        table = shared.table
        counts = {"hits": 0, "misses": 0, "inserts": 0, "bad": 0}
        deadline = time.monotonic() + RUN_SECONDS
        for i in range(MAX_OPS):
            if i % 64 == 0 and time.monotonic() > deadline:
                break
            k = keys[rng.randrange(len(keys))]
            if rng.random() < 0.5:
                table.insert(k, make_value(k, i, rng), time.monotonic_ns())
                counts["inserts"] += 1
            else:
                got = table.lookup(k, time.monotonic_ns())
                if got is None:
                    counts["misses"] += 1
                elif value_ok(k, got):
                    counts["hits"] += 1
                else:
                    counts["bad"] += 1
        return counts

    waits = [forker(hammer) for _ in range(PROCESSES)]
    results = [wait(30.0) for wait in waits]
    assert sum(r["bad"] for r in results) == 0, results
    assert sum(r["hits"] for r in results) > 0
    assert sum(r["inserts"] for r in results) > 0
    assert shared.table.stats()["torn"] == 0  # the seqlock alone kept reads whole


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("rate", "burst"), [(200.0, 50.0), (3.0, 1.0)])
def test_buckets_never_overgrant_across_processes(
    backend: str, forker: Forker, rate: float, burst: float
) -> None:
    shared = SharedBuckets.create(buckets=64, window=4, backend=backend)  # type: ignore[arg-type]
    rate_q = tokens.rate_to_q(rate)
    cap = tokens.tokens_to_units(burst)
    reclaim = (60 * 10**9) >> layout.TICK_SHIFT
    bucket_keys = [11, 12, 13]

    def hammer() -> dict[str, Any]:
        granted = dict.fromkeys(bucket_keys, 0)
        refused = 0
        start = time.monotonic_ns()
        deadline = start + int(RUN_SECONDS * 1e9)
        for i in range(MAX_OPS):
            now = time.monotonic_ns()
            if now > deadline:
                break
            k = bucket_keys[i % len(bucket_keys)]
            if shared.buckets.take(k, rate_q, cap, layout.TOKEN_ONE, now, reclaim) == 0:
                granted[k] += 1
            else:
                refused += 1
        return {"granted": granted, "refused": refused, "start": start, "end": time.monotonic_ns()}

    begin = time.monotonic_ns()
    waits = [forker(hammer) for _ in range(PROCESSES)]
    results = [wait(30.0) for wait in waits]
    first = min([begin] + [r["start"] for r in results])
    last = max(r["end"] for r in results)
    elapsed_s = (last - first + (2 << layout.TICK_SHIFT)) / 1e9
    for k in bucket_keys:
        total = sum(r["granted"][k] for r in results)
        assert total <= burst + rate * elapsed_s, (k, total, elapsed_s)
        assert total >= min(burst, 1)  # and it does grant
    assert sum(r["refused"] for r in results) > 0
    assert shared.buckets.stats()["busy"] == 0
