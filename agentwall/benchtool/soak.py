"""``python -m agentwall.benchtool.soak``: is memory flat over a long run?

Runs ``agentwall bench`` (proxied only, one long round) and samples the
resident memory of every process in the ``agentwall start`` tree (front-end,
audit writer, zygote, workers) at a fixed interval.  Prints one line per
sample and a summary per process: RSS after warm-up, at the end, the peak,
and the growth from warm-up to the end.  Exits 1 when a process grew by more
than ``--max-growth-mib`` after warm-up (a leak), 2 when the run failed.

Not part of CI (it takes minutes); issue 4 asks for a 10-minute run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agentwall.benchtool.procstat import cmdline, tree

PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def _role(pid: int) -> str:
    return "audit writer" if any("audit_writer" in a for a in cmdline(pid)) else "agentwall start"


def _find_proxy(bench_pid: int, deadline: float) -> int | None:
    while time.monotonic() < deadline:
        for pid in tree([bench_pid]):
            argv = cmdline(pid)
            if pid != bench_pid and "agentwall" in argv and "start" in argv:
                return pid
        time.sleep(0.2)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentwall.benchtool.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workload", default="default")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument(
        "--warmup", type=float, default=60.0, help="seconds before the reference sample"
    )
    parser.add_argument("--max-growth-mib", type=float, default=16.0)
    args = parser.parse_args(argv)
    duration = args.minutes * 60
    cmd = [
        sys.executable,
        "-m",
        "agentwall",
        "bench",
        "--mode",
        "http",
        "--only",
        "proxied",
        "--concurrency",
        str(args.concurrency),
        "--duration",
        str(duration),
        "--rounds",
        "1",
        "--warmup",
        "50",
        "--workload",
        args.workload,
    ]
    out = Path(tempfile.gettempdir()) / f"agentwall-soak-{os.getpid()}.log"
    with out.open("wb") as sink:
        bench = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    try:
        proxy = _find_proxy(bench.pid, time.monotonic() + 120)
        if proxy is None:
            print(f"soak: agentwall start did not appear (see {out})", file=sys.stderr)
            return 2
        start = time.monotonic()
        first: dict[int, float] = {}
        last: dict[int, float] = {}
        peak: dict[int, float] = {}
        roles: dict[int, str] = {}
        while bench.poll() is None:
            elapsed = time.monotonic() - start
            sample = {pid: s.rss_pages * PAGE_MIB for pid, s in tree([proxy]).items()}
            parts = []
            for pid, rss in sorted(sample.items()):
                roles.setdefault(pid, _role(pid))
                last[pid] = rss
                peak[pid] = max(peak.get(pid, 0.0), rss)
                if elapsed >= args.warmup:
                    first.setdefault(pid, rss)
                parts.append(f"{pid}:{rss:.1f}")
            print(f"t={elapsed:6.0f}s RSS MiB " + " ".join(parts), flush=True)
            time.sleep(args.interval)
        if bench.returncode != 0:
            print(f"soak: agentwall bench failed ({bench.returncode}); see {out}", file=sys.stderr)
            return 2
    finally:
        if bench.poll() is None:
            bench.terminate()
            bench.wait(30)
    print(
        f"\n{'pid':>8} {'process':<16} {'after warm-up':>13} {'end':>8} {'peak':>8} {'growth':>8}"
    )
    leaked = False
    for pid in sorted(last):
        base = first.get(pid)
        growth = None if base is None else last[pid] - base
        leaked |= growth is not None and growth > args.max_growth_mib
        print(
            f"{pid:>8} {roles.get(pid, '?'):<16} "
            f"{'-' if base is None else f'{base:.1f}':>13} {last[pid]:>8.1f} {peak[pid]:>8.1f} "
            f"{'-' if growth is None else f'{growth:+.1f}':>8}"
        )
    tail = out.read_text(errors="replace").strip().splitlines()
    print("\n" + "\n".join(line for line in tail if "proxied" in line or "calls" in line)[-2000:])
    print(
        f"soak: {'GROWTH over ' + str(args.max_growth_mib) + ' MiB' if leaked else 'flat'} "
        f"({args.minutes:g} min, {args.concurrency} clients, workload {args.workload})"
    )
    return 1 if leaked else 0


if __name__ == "__main__":
    sys.exit(main())
