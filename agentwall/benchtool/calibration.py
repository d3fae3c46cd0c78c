"""A fixed CPU workload that says how fast this machine is right now.

The CI gate divides each micro-benchmark's median by the median of this loop,
measured in the same process just before and after: a shared runner that is
twice as slow today slows both, and the ratio stays put.  The loop is shaped
like AgentWall's hot paths (dict and string work, small calls, JSON, a hash)
so that it responds to the same kind of slowdown.
"""

from __future__ import annotations

import fcntl
import hashlib
import tempfile
import time
from collections.abc import Callable

import orjson


def _small(x: int) -> int:
    return (x * 31 + 7) & 0xFFFF


def calibration_work() -> int:
    table: dict[str, dict[str, object]] = {}
    acc = 0
    for i in range(400):
        key = f"tool_{i % 37}"
        entry = table.get(key)
        if entry is None:
            entry = table[key] = {"name": key, "calls": 0, "args": []}
        entry["calls"] = int(str(entry["calls"])) + 1
        args = entry["args"]
        assert isinstance(args, list)
        args.append(i)
        acc += len(key)
    blob = orjson.dumps(table, option=orjson.OPT_SORT_KEYS)
    acc += len(orjson.loads(blob))
    acc += hashlib.sha256(blob).digest()[0]
    acc += sum(_small(x) for x in range(300))
    return acc


def _timed(run: Callable[[int], object], samples: int, per_sample: int) -> list[float]:
    """ns per unit of ``run(n)`` (n units of work), ``samples`` times, after
    one warm-up sample."""
    run(per_sample)
    out: list[float] = []
    for _ in range(samples):
        t0 = time.perf_counter_ns()
        run(per_sample)
        out.append((time.perf_counter_ns() - t0) / per_sample)
    return out


def _calibration_runs(n: int) -> None:
    for _ in range(n):
        calibration_work()


def calibration_samples(samples: int = 15, per_sample: int = 40) -> list[float]:
    """ns per ``calibration_work()`` call, ``samples`` times (after one warm-up)."""
    return _timed(_calibration_runs, samples, per_sample)


def syscall_calibration_samples(samples: int = 15, per_sample: int = 100) -> list[float]:
    """ns per take-and-release of a POSIX byte-range lock (two ``fcntl.lockf``
    system calls), ``samples`` times (after one warm-up).

    The pure-Python shared-memory backend pays exactly this per operation.
    Hosts weigh a system call against Python differently, by more than the
    gate's 2x, and the CPU loop cannot see it; so the gate also holds that
    backend's figures to their median over this loop (docs/bench.md,
    "Syscall-bound figures").
    """
    with tempfile.TemporaryFile() as handle:
        fd = handle.fileno()

        def pairs(n: int) -> None:
            for _ in range(n):
                fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)

        return _timed(pairs, samples, per_sample)
