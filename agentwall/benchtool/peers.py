"""``scripts/compare-peers``: the same workload through the proxies a user might pick instead.

Each peer is installed from PyPI into its own throwaway venv under /tmp and
started as a user would start it, in front of the same built-in upstream
(the fast HTTP server, or its stdio twin where the peer only speaks stdio to
its upstream).  The load generator, workload, seeds and durations are the
ones ``agentwall bench`` uses; every figure is measured in this run.

HTTP peers (agent -> HTTP -> proxy -> upstream):
- ``agentwall start`` (bench policy, durable audit), when this tree has it;
- FastMCP ``create_proxy(url)`` as shipped (a fresh upstream session per call);
- FastMCP ``create_proxy(connected Client)`` (one reused upstream session);
- ``mcp-proxy --port P -- <stdio upstream>``: mcp-proxy serves HTTP only in
  front of a stdio server (its HTTP-upstream mode is stdio-facing), so it gets
  the stdio twin of the upstream.

stdio peers (agent -> pipes -> proxy -> pipes -> upstream), one client:
- ``agentwall wrap`` (bench policy, durable audit), when this tree has it;
- ``agentward inspect`` (minimal allow-all policy, JSON-lines log);
- FastMCP ``create_proxy(StdioTransport(...))`` run over stdio.

Not run in CI: it installs packages and takes several minutes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentwall.benchtool.channels import ChannelError
from agentwall.benchtool.loadgen import (
    HttpTarget,
    LoadError,
    LoadResult,
    LoadSpec,
    StdioTarget,
    Target,
    run_load,
)
from agentwall.benchtool.procs import (
    FastUpstream,
    Managed,
    ProcessError,
    free_port,
    has_module,
    key_env,
)
from agentwall.benchtool.runner import bundled_policy, environment
from agentwall.benchtool.stopping import describe, exit_code, unwind_on_stop_signals
from agentwall.benchtool.sync_client import SyncHttpSession

STDIO_SERVER = [sys.executable, "-m", "agentwall.demo.stdio_server"]

FASTMCP_SCRIPT = """\
import asyncio, sys
from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from fastmcp.server import create_proxy

mode = sys.argv[1]
if mode == "shipped":
    create_proxy(sys.argv[2]).run(
        transport="http", host="127.0.0.1", port=int(sys.argv[3]), show_banner=False)
elif mode == "reused":
    async def main():
        async with Client(sys.argv[2]) as client:
            await create_proxy(client).run_async(
                transport="http", host="127.0.0.1", port=int(sys.argv[3]), show_banner=False)
    asyncio.run(main())
else:
    command = sys.argv[2:]
    create_proxy(StdioTransport(command=command[0], args=command[1:])).run(
        transport="stdio", show_banner=False)
"""

AGENTWARD_POLICY = 'version: "1.0"\ndefault_action: allow\n'


@dataclass
class Venv:
    package: str
    path: Path
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def bin(self) -> Path:
        return self.path / "bin"


def make_venv(package: str, root: Path, reuse: bool) -> Venv:
    venv = Venv(package, root / package)
    if not (reuse and (venv.bin / "python").exists()):
        if venv.path.exists():
            shutil.rmtree(venv.path)
        subprocess.run([sys.executable, "-m", "venv", str(venv.path)], check=True, timeout=300)
        print(f"  installing {package} into {venv.path} ...", file=sys.stderr, flush=True)
        done = subprocess.run(
            [str(venv.bin / "pip"), "install", "-q", "--disable-pip-version-check", package],
            check=False,
            timeout=900,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise ProcessError(f"pip install {package} failed:\n{done.stderr[-3000:]}")
    listed = subprocess.run(
        [str(venv.bin / "pip"), "list", "--format=json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    wanted = {package, "mcp", "fastmcp", "httpx", "uvicorn", "starlette"}
    venv.versions = {
        p["name"]: p["version"] for p in json.loads(listed.stdout) if p["name"].lower() in wanted
    }
    return venv


@dataclass
class Row:
    peer: str
    transport: Literal["http", "stdio"]
    workload: str
    concurrency: int
    calls_per_s: float | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    overhead_p50_us: float | None = None
    overhead_p99_us: float | None = None
    unexpected: dict[str, dict[str, int]] = field(default_factory=dict)
    error: str | None = None
    versions: str = ""
    note: str = ""


class HttpPeer(Managed):
    """A peer serving MCP over HTTP; ready once an MCP initialize succeeds."""

    def __init__(self, name: str, argv: list[str], workdir: Path, port: int, path: str) -> None:
        self.name = name.split(" ")[0]
        super().__init__(argv, workdir)
        self.port = port
        self.path = path

    def start(self, timeout: float = 90.0) -> HttpPeer:
        self.spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise self.failure("exited before it was ready")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                SyncHttpSession("127.0.0.1", self.port, self.path, timeout=30).close()
                return self
            except (OSError, ChannelError):
                time.sleep(0.2)
        raise self.failure("was not ready in time")

    @property
    def target(self) -> HttpTarget:
        return HttpTarget("127.0.0.1", self.port, self.path)


def _measure(
    target: Target, concurrency: int, opts: argparse.Namespace, workload: str, label: str
) -> LoadResult | str:
    spec = LoadSpec(
        target,
        concurrency,
        duration_s=opts.duration,
        warmup_calls=opts.warmup,
        workload=workload,
        timeout_s=opts.duration * 4 + 300,
    )
    print(
        f"  {label:<44} c={concurrency:<3} {workload:<9} ...", end="", file=sys.stderr, flush=True
    )
    try:
        result = run_load(spec)
    except LoadError as exc:
        print(" FAILED", file=sys.stderr)
        return str(exc).splitlines()[0][:300] + _stderr_tail(target)
    s = result.latency
    print(f" {result.calls_per_s:9,.0f}/s  p50 {s.p50 if s else 0:9,.0f} us", file=sys.stderr)
    if result.failures:
        failed = f"{len(result.failures)} channel(s) failed: {result.failures[0][:200]}"
        return failed + _stderr_tail(target)
    return result


def _stderr_tail(target: Target) -> str:
    """The last line the proxy wrote to stderr, when it says why it stopped."""
    if not isinstance(target, StdioTarget) or target.stderr_path is None:
        return ""
    try:
        lines = Path(f"{target.stderr_path}.0").read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return f" (its stderr: {lines[-1][:200]})" if lines else ""


def _row(
    peer: str,
    transport: Literal["http", "stdio"],
    workload: str,
    c: int,
    got: LoadResult | str,
    base: LoadResult | str | None,
    enforcing: bool,
    versions: str,
    note: str,
) -> Row:
    row = Row(peer, transport, workload, c, versions=versions, note=note)
    if isinstance(got, str):
        row.error = got
        return row
    s = got.latency
    row.calls_per_s = got.calls_per_s
    row.unexpected = got.unexpected(enforcing=enforcing)
    if s is not None:
        row.p50_us, row.p99_us = s.p50, s.p99
        b = base.latency if isinstance(base, LoadResult) else None
        if b is not None:
            row.overhead_p50_us = s.p50 - b.p50
            row.overhead_p99_us = s.p99 - b.p99
    return row


def run(opts: argparse.Namespace) -> dict[str, Any]:
    root = Path(opts.venvs)
    root.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="agentwall-peers-"))
    started = environment()  # date and load average at the start
    rows: list[Row] = []
    policy = str(bundled_policy())
    ours = f"agentwall {environment()['agentwall']}"
    print("compare-peers: preparing venvs", file=sys.stderr)
    venvs = {
        name: make_venv(name, root, opts.reuse_venvs)
        for name in ("fastmcp", "mcp-proxy", "agentward")
    }

    def ver(name: str) -> str:
        v = venvs[name].versions
        return ", ".join(f"{k} {v[k]}" for k in sorted(v))

    (workdir / "fastmcp_peer.py").write_text(FASTMCP_SCRIPT)
    (workdir / "agentward.yaml").write_text(AGENTWARD_POLICY)
    conc = [int(x) for x in opts.concurrency.split(",")]
    try:
        with FastUpstream(workdir) as upstream:
            upstream.start()
            direct = HttpTarget.from_url(upstream.url)
            for workload in opts.workloads.split(","):
                base = {c: _measure(direct, c, opts, workload, "direct (HTTP)") for c in conc}
                for c in conc:
                    rows.append(
                        _row("direct", "http", workload, c, base[c], None, False, "", "no proxy")
                    )
                http_peers: list[tuple[str, list[str], str, bool, str, str]] = []
                if has_module("agentwall.cli.start"):
                    http_peers.append(
                        (
                            "agentwall start",
                            [],
                            "/mcp",
                            True,
                            ours,
                            "bench policy, durable HMAC-chained audit",
                        )
                    )
                fm = str(venvs["fastmcp"].bin / "python")
                script = str(workdir / "fastmcp_peer.py")
                http_peers += [
                    (
                        "fastmcp proxy (as shipped)",
                        [fm, script, "shipped", upstream.url],
                        "/mcp",
                        False,
                        ver("fastmcp"),
                        "create_proxy(url): new upstream session per call; no policy, no audit",
                    ),
                    (
                        "fastmcp proxy (reused client)",
                        [fm, script, "reused", upstream.url],
                        "/mcp",
                        False,
                        ver("fastmcp"),
                        "create_proxy(connected Client); no policy, no audit",
                    ),
                    (
                        "mcp-proxy",
                        [
                            str(venvs["mcp-proxy"].bin / "mcp-proxy"),
                            "--host",
                            "127.0.0.1",
                            "--port",
                            "{port}",
                            "--",
                            *STDIO_SERVER,
                        ],
                        "/mcp",
                        False,
                        ver("mcp-proxy"),
                        "HTTP front, stdio twin of the upstream; no policy, no audit",
                    ),
                ]
                for name, argv, path, enforcing, versions, note in http_peers:
                    port = free_port()
                    peer: Managed
                    if name == "agentwall start":
                        from agentwall.benchtool.procs import Proxy

                        peer = Proxy(upstream.url, workdir, policy=policy)
                        peer.start()
                        target: Target = HttpTarget("127.0.0.1", peer.port, "/mcp")
                    else:
                        argv = [a.replace("{port}", str(port)) for a in argv]
                        if "fastmcp" in name:
                            argv.append(str(port))
                        peer = HttpPeer(name, argv, workdir, port, path)
                        try:
                            peer.start()
                        except ProcessError as exc:
                            for c in conc:
                                rows.append(
                                    _row(
                                        name,
                                        "http",
                                        workload,
                                        c,
                                        str(exc)[:300],
                                        None,
                                        enforcing,
                                        versions,
                                        note,
                                    )
                                )
                            continue
                        target = HttpTarget("127.0.0.1", port, path)
                    with peer:
                        for c in conc:
                            got = _measure(target, c, opts, workload, name)
                            rows.append(
                                _row(
                                    name,
                                    "http",
                                    workload,
                                    c,
                                    got,
                                    base[c],
                                    enforcing,
                                    versions,
                                    note,
                                )
                            )
                # stdio: one client.
                sbase = _measure(
                    StdioTarget(tuple(STDIO_SERVER)), 1, opts, workload, "direct (stdio)"
                )
                rows.append(
                    _row("direct", "stdio", workload, 1, sbase, None, False, "", "no proxy")
                )
                stdio_peers: list[tuple[str, list[str], bool, str, str]] = []
                if has_module("agentwall.cli.wrap"):
                    stdio_peers.append(
                        (
                            "agentwall wrap",
                            [
                                sys.executable,
                                "-m",
                                "agentwall",
                                "wrap",
                                "--policy",
                                policy,
                                "--log-path",
                                str(workdir / f"wrap-{workload}-{{channel}}.log"),
                                "--",
                                *STDIO_SERVER,
                            ],
                            True,
                            ours,
                            "bench policy, durable HMAC-chained audit",
                        )
                    )
                stdio_peers += [
                    (
                        "agentward inspect",
                        [
                            str(venvs["agentward"].bin / "agentward"),
                            "inspect",
                            "--policy",
                            str(workdir / "agentward.yaml"),
                            "--log",
                            str(workdir / f"agentward-{workload}.jsonl"),
                            "--",
                            *STDIO_SERVER,
                        ],
                        False,
                        ver("agentward"),
                        "allow-all policy, JSON-lines log (no fsync)",
                    ),
                    (
                        "fastmcp proxy (stdio)",
                        [fm, script, "stdio", *STDIO_SERVER],
                        False,
                        ver("fastmcp"),
                        "create_proxy(StdioTransport); no policy, no audit",
                    ),
                ]
                for name, argv, enforcing, versions, note in stdio_peers:
                    got = _measure(
                        StdioTarget(
                            tuple(argv),
                            env=key_env(workdir),
                            stderr_path=str(workdir / f"{name.split()[0]}-{workload}.stderr"),
                        ),
                        1,
                        opts,
                        workload,
                        name,
                    )
                    rows.append(
                        _row(name, "stdio", workload, 1, got, sbase, enforcing, versions, note)
                    )
    finally:
        if opts.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        "environment": started,
        "duration_s": opts.duration,
        "rows": [r.__dict__ for r in rows],
    }


def render(data: dict[str, Any]) -> str:
    env = data["environment"]
    lines = [
        f"compare-peers: {env['date']}, {env['cpu_model']}, {env['cpus']} CPUs, "
        f"Python {env['python']}, load average {env['loadavg_at_start'][0]} at start; "
        f"{data['duration_s']:g} s per run",
        "",
        f"{'proxy':<30} {'path':<5} {'workload':<9} {'clients':>7} {'calls/s':>9} "
        f"{'p50 us':>9} {'p99 us':>9} {'+p50 us':>9} {'+p99 us':>9}",
    ]
    lines.append("-" * len(lines[-1]))

    def num(v: float | None, fmt: str = ",.0f") -> str:
        return "-" if v is None else format(v, fmt)

    for r in data["rows"]:
        if r["error"]:
            lines.append(
                f"{r['peer']:<30} {r['transport']:<5} {r['workload']:<9} "
                f"{r['concurrency']:>7}  FAILED: {r['error'][:160]}"
            )
            continue
        flag = " *" if r["unexpected"] else ""
        lines.append(
            f"{r['peer']:<30} {r['transport']:<5} {r['workload']:<9} {r['concurrency']:>7} "
            f"{num(r['calls_per_s']):>9} {num(r['p50_us']):>9} {num(r['p99_us']):>9} "
            f"{num(r['overhead_p50_us'], '+,.0f'):>9} {num(r['overhead_p99_us'], '+,.0f'):>9}"
            f"{flag}"
        )
    lines.append("")
    seen: set[str] = set()
    for r in data["rows"]:
        if r["peer"] in seen or r["peer"] == "direct":
            continue
        seen.add(r["peer"])
        lines.append(f"{r['peer']}: {r['versions']}; {r['note']}")
    if any(r["unexpected"] for r in data["rows"]):
        lines.append("* outcomes the workload did not expect (see --json)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/compare-peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--concurrency", default="1,16,64", help="HTTP clients (stdio: 1)")
    parser.add_argument("--workloads", default="default,echo_tiny")
    parser.add_argument("--warmup", type=int, default=3, help="unrecorded calls per client")
    parser.add_argument(
        "--venvs", default=str(Path(tempfile.gettempdir()) / "agentwall-peer-venvs")
    )
    parser.add_argument(
        "--reuse-venvs",
        action="store_true",
        help="keep venvs from an earlier run instead of reinstalling",
    )
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("--keep", action="store_true")
    opts = parser.parse_args(argv)
    try:
        with unwind_on_stop_signals():
            data = run(opts)
    except (ProcessError, subprocess.CalledProcessError) as exc:
        print(f"compare-peers: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"compare-peers: {describe(exc)}", file=sys.stderr)
        return exit_code(exc)
    print(render(data))
    if opts.json:
        Path(opts.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
