"""The floor under ``agentwall wrap``'s added latency on this machine.

A skeleton wrap: one uvloop process between the host and the server's pipes
that, for each line from the host, appends a fixed 256-byte record to a log
and fdatasyncs it before forwarding the line, and relays the server's lines
back untouched.  No parsing, no policy, no HMAC.  It is what any wrap that
makes an entry durable before forwarding must cost here (one more process in
the path, two more pipe hops, one fdatasync), so a lower bound for the real
one.

Run (about a minute)::

    .venv/bin/python bench/floor_stdio.py [--log-dir /dev/shm] [--blocks 20]

It alternates blocks of 100 calls direct, through the skeleton and through
the real ``agentwall wrap`` (same server, client and policy as
``bench/bench_wrap.py``), and prints medians and p99.  Compare within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_wrap  # a sibling module, not a package

from agentwall.benchtool import procstat
from agentwall.benchtool.sync_client import SyncStdioSession

RECORD = b"r" * 255 + b"\n"


class _Lines(asyncio.Protocol):
    """Calls ``on_line`` for each whole line read from a pipe."""

    def __init__(self, on_line: Any, on_eof: Any) -> None:
        self.on_line, self.on_eof = on_line, on_eof
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\n")) >= 0:
            line, self.buf = self.buf[: end + 1], self.buf[end + 1 :]
            self.on_line(line)

    def eof_received(self) -> bool:
        self.on_eof()
        return False


def run_relay(log_path: str, argv: list[str]) -> int:
    import subprocess

    import uvloop

    server = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert server.stdin is not None
    assert server.stdout is not None
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    to_server, from_server = server.stdin.fileno(), server.stdout

    def upward(line: bytes) -> None:
        os.write(fd, RECORD)
        os.fdatasync(fd)
        os.write(to_server, line)  # small lines: a pipe write does not block

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def server_closed() -> None:
            if not done.done():
                done.set_result(None)

        host_out, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout)
        await loop.connect_read_pipe(lambda: _Lines(upward, lambda: os.close(to_server)), sys.stdin)
        await loop.connect_read_pipe(
            lambda: _Lines(host_out.write, server_closed),
            from_server,
        )
        await done

    uvloop.run(main())
    return server.wait()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "relay":
        sys.exit(run_relay(sys.argv[2], sys.argv[4:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-dir", default=None, help="where the logs go (default $TMPDIR)")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--calls", type=int, default=100, help="calls per block")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="agentwall-floor-stdio-", dir=args.log_dir))
    here = str(Path(__file__).resolve())
    server = list(bench_wrap.SERVER)
    sessions: dict[str, Any] = {}
    machine = procstat.MachineProbe()
    try:
        sessions["direct"] = SyncStdioSession(server)
        sessions["skeleton"] = SyncStdioSession(
            [sys.executable, here, "relay", str(tmp / "floor.log"), "--", *server]
        )
        sessions["wrap"] = bench_wrap._wrapped(tmp)
        for session in sessions.values():
            bench_wrap._times_us(session, bench_wrap.WARMUP)
        samples: dict[str, list[float]] = {name: [] for name in sessions}
        deltas: dict[str, list[float]] = {"skeleton": [], "wrap": []}
        machine.start()
        for _ in range(args.blocks):
            block = {name: bench_wrap._times_us(s, args.calls) for name, s in sessions.items()}
            for name, values in block.items():
                samples[name] += values
                if name != "direct":
                    deltas[name].append(
                        statistics.median(values) - statistics.median(block["direct"])
                    )
        machine.stop()
    finally:
        for session in sessions.values():
            session.close()
        shutil.rmtree(tmp, ignore_errors=True)
    pct = bench_wrap._pct
    direct = samples["direct"]
    print(f"log in {args.log_dir or 'a temp dir under $TMPDIR'}; "
          f"{args.blocks} alternated blocks of {args.calls} calls")  # fmt: skip
    for name, values in samples.items():
        line = f"  {name:9} p50 {pct(values, 0.5):6.0f} us  p99 {pct(values, 0.99):6.0f} us"
        if name != "direct":
            line += (
                f"  added p50 {pct(values, 0.5) - pct(direct, 0.5):+.0f} us"
                f" (median of blocks {statistics.median(deltas[name]):+.0f})"
                f", added p99 {pct(values, 0.99) - pct(direct, 0.99):+.0f} us"
            )
        print(line)
    print(machine.describe())


if __name__ == "__main__":
    main()
