"""The disk's own floor under every audited call: one durable write, alone.

An audited call is released only once its entry is durable, and with one
call in flight nothing shares its flush, so whatever one flush costs here is
added to every call at one client before any hop, parse or policy.  This
measures that flush three ways, with nothing else running:

    append    write() at the end of the file, then fdatasync (what the
              audit writer does);
    dsync     pwrite() into a pre-zeroed file opened O_DSYNC (no size or
              extent change for the journal to record);
    direct    the same with O_DIRECT (no page cache), where the file
              system allows it.

Each write is ``--size`` bytes, ``--writes`` times, ``--gap-ms`` apart (a
gap, so each flush is alone, as at one client).  It prints p50, p90, p99
and max per way.  Run it on the file system the log will live on::

    .venv/bin/python bench/floor_disk.py [--dir DIR] [--writes 3000] [--size 600]
"""

from __future__ import annotations

import argparse
import mmap
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agentwall.benchtool.stats import percentile

_BLOCK = 4096


def _timed(writes: int, gap_s: float, write: Callable[[int], None]) -> list[float]:
    """Microseconds per call of ``write(i)``."""
    out = []
    for i in range(writes):
        started = time.perf_counter_ns()
        write(i)
        out.append((time.perf_counter_ns() - started) / 1000)
        time.sleep(gap_s)
    return sorted(out)


def measure_append(path: Path, writes: int, size: int, gap_s: float) -> list[float]:
    record = b"x" * (size - 1) + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:

        def write(_: int) -> None:
            os.write(fd, record)
            os.fdatasync(fd)

        return _timed(writes, gap_s, write)
    finally:
        os.close(fd)
        path.unlink()


def measure_prezeroed(
    path: Path, writes: int, size: int, gap_s: float, *, direct: bool
) -> list[float] | None:
    """None when the file system refuses O_DIRECT."""
    slot = -(-size // _BLOCK) * _BLOCK
    with path.open("wb") as f:
        f.write(b"\0" * slot * writes)
        f.flush()
        os.fsync(f.fileno())
    flags = os.O_WRONLY | os.O_DSYNC | (os.O_DIRECT if direct else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        path.unlink()
        return None
    # O_DIRECT needs an aligned buffer: an anonymous mapping is page-aligned.
    buffer = mmap.mmap(-1, slot)
    buffer.write(b"y" * (size - 1) + b"\n")
    try:

        def write(i: int) -> None:
            os.pwrite(fd, buffer, i * slot)

        return _timed(writes, gap_s, write)
    except OSError:
        return None
    finally:
        buffer.close()
        os.close(fd)
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="where to write (default: $TMPDIR)")
    parser.add_argument("--writes", type=int, default=3000)
    parser.add_argument("--size", type=int, default=600, help="bytes per write")
    parser.add_argument("--gap-ms", type=float, default=0.5)
    args = parser.parse_args(argv)
    if args.writes < 1 or not 1 <= args.size <= _BLOCK:
        parser.error(f"--writes must be >= 1 and --size between 1 and {_BLOCK}")
    folder = Path(tempfile.mkdtemp(prefix="agentwall-floor-disk-", dir=args.dir))
    gap_s = args.gap_ms / 1000
    try:
        print(f"{args.writes} writes of {args.size} bytes, {args.gap_ms} ms apart, in {folder}")
        ways: list[tuple[str, list[float] | None]] = [
            ("append", measure_append(folder / "a", args.writes, args.size, gap_s)),
            (
                "dsync",
                measure_prezeroed(folder / "d", args.writes, args.size, gap_s, direct=False),
            ),
            (
                "direct",
                measure_prezeroed(folder / "o", args.writes, args.size, gap_s, direct=True),
            ),
        ]
        for name, lat in ways:
            if lat is None:
                print(f"  {name:7} not supported here")
                continue
            print(
                f"  {name:7} p50 {percentile(lat, 50):7.0f} us  p90 {percentile(lat, 90):7.0f} us"
                f"  p99 {percentile(lat, 99):7.0f} us  max {lat[-1]:7.0f} us"
            )
    finally:
        for leftover in folder.iterdir():
            leftover.unlink()
        folder.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
