"""``agentwall bench``: direct and proxied, side by side, in the same run.

For each concurrency the same workload (same seeds, same schedule) is sent
first straight to the upstream, then through the proxy, ``rounds`` times,
alternating.  Samples of all rounds are pooled for the percentiles; the
per-round figures are kept too (the CI gate takes medians of ratios).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from agentwall import __version__
from agentwall.benchtool import metrics, procstat
from agentwall.benchtool.loadgen import (
    HttpTarget,
    LoadResult,
    LoadSpec,
    StdioTarget,
    Target,
    run_load,
)
from agentwall.benchtool.procs import FastUpstream, Proxy, agentwall_command, has_module, key_env
from agentwall.benchtool.stats import LatencySummary, summarize

Mode = Literal["http", "stdio"]
STDIO_SERVER = "agentwall.demo.stdio_server"


class BenchError(Exception):
    """The benchmark could not run as asked (not a slow result: a failure)."""


def bundled_policy(name: str = "bench-policy.yaml") -> Path | None:
    path = Path(__file__).resolve().parent.parent / "data" / name
    return path if path.is_file() else None


class BenchOptions(msgspec.Struct, frozen=True):
    mode: Mode = "http"
    concurrency: tuple[int, ...] = (1, 16, 64)
    calls: int | None = None
    duration_s: float | None = 5.0
    policy: str | None = None
    upstream: str = "builtin"
    audit: Literal["durable", "none"] = "durable"
    workload: str = "default"
    rounds: int = 1
    warmup_calls: int = 50
    processes: int | None = None
    proxy_args: tuple[str, ...] = ()
    only: Literal["both", "direct", "proxied"] = "both"
    keep_dir: bool = False


class RunFigures(msgspec.Struct):
    """One side (direct or proxied) at one concurrency, all rounds pooled."""

    calls: int
    wall_s: float
    calls_per_s: float
    latency_us: LatencySummary | None
    p50_by_kind_us: dict[str, float]
    outcomes: dict[str, dict[str, int]]
    unexpected: dict[str, dict[str, int]]
    loadgen_processes: int
    loadgen_cpu_s: float
    loadgen_cpu_per_call_us: float
    upstream_cpu_per_call_us: float | None
    proxy_cpu_per_call_us: float | None = None
    # The same split by process role (front-end, evaluators, audit writer):
    # which process a throughput limit is in.
    proxy_cpu_by_role_us: dict[str, float] = msgspec.field(default_factory=dict)
    proxy_processes: int | None = None
    proxy_rss_mb: float | None = None
    fsync_batches: float | None = None
    fsync_batch_mean: float | None = None
    cache_hit_rate: float | None = None
    # Mean µs per stage from the proxy's *_seconds histograms (where the time goes).
    stages_us: dict[str, float] = msgspec.field(default_factory=dict)
    # The whole machine during the measured windows, in cores: busy, idle
    # (with iowait) and stolen by the hypervisor (a shared host's noise).
    machine_cores: dict[str, float] | None = None
    metrics_note: str | None = None
    rounds_calls_per_s: list[float] = msgspec.field(default_factory=list)
    rounds_p50_us: list[float] = msgspec.field(default_factory=list)
    rounds_p99_us: list[float] = msgspec.field(default_factory=list)


class Row(msgspec.Struct):
    concurrency: int
    direct: RunFigures | None
    proxied: RunFigures | None
    overhead_p50_us: float | None
    overhead_p99_us: float | None
    # Per round: proxied minus direct (the gate takes the median).
    rounds_overhead_p50_us: list[float] = msgspec.field(default_factory=list)


class Goal(msgspec.Struct):
    name: str
    target: str
    measured: str
    met: bool | None


class BenchReport(msgspec.Struct):
    mode: Mode
    options: BenchOptions
    environment: dict[str, Any]
    rows: list[Row]
    goals: list[Goal]
    audit: str
    notes: list[str]


def environment() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "agentwall": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


# ----------------------------------------------------------------- measuring


class _Side:
    """Accumulates rounds for one side at one concurrency."""

    def __init__(self) -> None:
        self.results: list[LoadResult] = []
        self.upstream_cpu = 0.0
        self.upstream_measured = False
        self.proxy_cpu: float | None = None
        self.proxy_cpu_by_role: dict[str, float] = {}
        self.proxy_processes: int | None = None
        self.proxy_rss: float | None = None
        self.scrapes: list[tuple[metrics.Scrape, metrics.Scrape]] = []
        # Core-seconds (busy, idle, steal) and wall seconds over the windows.
        self.machine_core_s: list[float] | None = None
        self.machine_wall_s = 0.0

    def figures(self, *, enforcing: bool) -> RunFigures:
        calls = sum(r.calls for r in self.results)
        wall = sum(r.wall_s for r in self.results)
        pooled = sorted(x for r in self.results for x in r.latencies_ns)
        by_kind: dict[str, list[int]] = {}
        outcomes: dict[str, dict[str, int]] = {}
        unexpected: dict[str, dict[str, int]] = {}
        for r in self.results:
            for kind, values in r.by_kind_ns.items():
                by_kind.setdefault(kind, []).extend(values)
            _add_counts(outcomes, r.outcomes)
            _add_counts(unexpected, r.unexpected(enforcing=enforcing))
        p50_by_kind = {}
        for kind, values in by_kind.items():
            summary = summarize(sorted(values))
            if summary is not None:
                p50_by_kind[kind] = summary.p50
        cpu = sum(r.loadgen_cpu_s for r in self.results)
        figs = RunFigures(
            calls=calls,
            wall_s=wall,
            calls_per_s=calls / wall if wall else 0.0,
            latency_us=summarize(pooled),
            p50_by_kind_us=p50_by_kind,
            outcomes=outcomes,
            unexpected=unexpected,
            loadgen_processes=self.results[0].processes if self.results else 0,
            loadgen_cpu_s=cpu,
            loadgen_cpu_per_call_us=cpu / calls * 1e6 if calls else 0.0,
            upstream_cpu_per_call_us=(
                self.upstream_cpu / calls * 1e6 if calls and self.upstream_measured else None
            ),
            rounds_calls_per_s=[r.calls_per_s for r in self.results],
            rounds_p50_us=[_p(r, 50) for r in self.results],
            rounds_p99_us=[_p(r, 99) for r in self.results],
        )
        if self.proxy_cpu is not None and calls:
            figs.proxy_cpu_per_call_us = self.proxy_cpu / calls * 1e6
            figs.proxy_cpu_by_role_us = {
                role: cpu / calls * 1e6 for role, cpu in self.proxy_cpu_by_role.items()
            }
            figs.proxy_processes = self.proxy_processes
            figs.proxy_rss_mb = self.proxy_rss
        if self.scrapes:
            _fill_metrics(figs, self.scrapes)
        if self.machine_core_s is not None and self.machine_wall_s > 0:
            busy, idle, steal = (x / self.machine_wall_s for x in self.machine_core_s)
            figs.machine_cores = {"busy": busy, "idle": idle, "steal": steal}
        return figs


def _p(result: LoadResult, q: float) -> float:
    s = result.latency
    return (s.p50 if q == 50 else s.p99) if s is not None else 0.0


def _add_counts(into: dict[str, dict[str, int]], more: dict[str, dict[str, int]]) -> None:
    for kind, counts in more.items():
        slot = into.setdefault(kind, {})
        for outcome, n in counts.items():
            slot[outcome] = slot.get(outcome, 0) + n


def _fill_metrics(figs: RunFigures, scrapes: list[tuple[metrics.Scrape, metrics.Scrape]]) -> None:
    failed = [b.error or a.error for b, a in scrapes if not (b.ok and a.ok)]
    if failed:
        figs.metrics_note = f"GET /metrics failed: {failed[0]}"
        return
    batches = entries = hits = lookups = 0.0
    have_fsync = have_cache = True
    stage_sum: dict[str, float] = {}
    stage_n: dict[str, float] = {}
    for before, after in scrapes:
        f = metrics.figures(before, after)
        for stage, (mean_us, n) in f.stages_us.items():
            stage_sum[stage] = stage_sum.get(stage, 0.0) + mean_us * n
            stage_n[stage] = stage_n.get(stage, 0.0) + n
        if f.fsync_batches is None or f.fsync_batch_mean is None:
            have_fsync = False
        else:
            batches += f.fsync_batches
            entries += f.fsync_batch_mean * f.fsync_batches
        if f.cache_lookups is None or f.cache_hit_rate is None:
            have_cache = False
        else:
            lookups += f.cache_lookups
            hits += f.cache_hit_rate * f.cache_lookups
    figs.stages_us = {k: stage_sum[k] / stage_n[k] for k in stage_sum if stage_n[k]}
    if have_fsync and batches:
        figs.fsync_batches = batches
        figs.fsync_batch_mean = entries / batches
    if have_cache and lookups:
        figs.cache_hit_rate = hits / lookups
    if not have_fsync or not have_cache:
        names = sorted(n for n in scrapes[-1][1].names() if n.startswith("agentwall"))
        figs.metrics_note = (
            "series not exported: "
            + ", ".join(
                x
                for x, ok in (("fsync batch size", have_fsync), ("cache hits", have_cache))
                if not ok
            )
            + (f" (proxy exports {len(names)} agentwall_* series)" if names else "")
        )


@contextlib.contextmanager
def _probing(
    side: _Side,
    upstream_roots: Callable[[], list[int]],
    proxy_roots: Callable[[], list[int]] | None,
    proxy_exclude: Callable[[int], bool] | None,
    scrape: Callable[[], metrics.Scrape] | None,
    proxy_role: Callable[[int], str] | None = None,
) -> Iterator[None]:
    up = procstat.TreeProbe(upstream_roots)
    px = (
        procstat.TreeProbe(proxy_roots, exclude=proxy_exclude, role=proxy_role)
        if proxy_roots
        else None
    )
    machine = procstat.MachineProbe()
    before = scrape() if scrape is not None else None
    up.start()
    if px is not None:
        px.start()
    machine.start()
    yield
    machine.stop()
    up.stop()
    if px is not None:
        px.stop()
        side.proxy_cpu = (side.proxy_cpu or 0.0) + px.cpu_s
        for role, cpu in px.cpu_by_role_s.items():
            side.proxy_cpu_by_role[role] = side.proxy_cpu_by_role.get(role, 0.0) + cpu
        side.proxy_processes = px.processes
        side.proxy_rss = px.rss_bytes / 2**20
    if machine.cores is not None:
        c, wall = machine.cores, machine.wall_s
        sums = side.machine_core_s or [0.0, 0.0, 0.0]
        side.machine_core_s = [
            sums[0] + c.busy * wall,
            sums[1] + c.idle * wall,
            sums[2] + c.steal * wall,
        ]
        side.machine_wall_s += wall
    side.upstream_cpu += up.cpu_s
    side.upstream_measured = side.upstream_measured or up.processes > 0
    if scrape is not None and before is not None:
        side.scrapes.append((before, scrape()))


class Progress:
    """A live line on a terminal; one summary line per run otherwise."""

    def __init__(self, label: str, total: int | None, duration: float | None) -> None:
        self.label = label
        self.total = total
        self.duration = duration
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, elapsed: float) -> None:
        if not self.tty:
            return
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.total:
            pct = f"{100 * done / self.total:5.1f}%"
        elif self.duration:
            pct = f"{100 * min(elapsed / self.duration, 1):5.1f}%"
        else:
            pct = ""
        line = f"  {self.label:<22} {pct} {done:>9,} calls {rate:>9,.0f}/s {elapsed:6.1f}s"
        print(f"\r{line}", end="", file=sys.stderr, flush=True)

    def finish(self, result: LoadResult) -> None:
        s = result.latency
        p = f"p50 {s.p50:,.0f} us  p99 {s.p99:,.0f} us" if s else "no samples"
        end = "\r" if self.tty else ""
        line = f"  {self.label:<22} {result.calls:>9,} calls {result.calls_per_s:>9,.0f}/s  {p}"
        print(f"{end}{line}" + " " * 8, file=sys.stderr, flush=True)


def _spec(opts: BenchOptions, target: Target, concurrency: int, round_no: int) -> LoadSpec:
    return LoadSpec(
        target=target,
        concurrency=concurrency,
        calls=opts.calls,
        duration_s=None if opts.calls is not None else opts.duration_s,
        warmup_calls=opts.warmup_calls,
        workload=opts.workload,
        processes=opts.processes,
        seed=1 + round_no,
    )


def _measure(
    opts: BenchOptions,
    label: str,
    target: Target,
    concurrency: int,
    round_no: int,
    side: _Side,
    around: Callable[[list[int]], contextlib.AbstractContextManager[Any]],
) -> None:
    spec = _spec(opts, target, concurrency, round_no)
    progress = Progress(label, spec.calls, spec.duration_s)
    result = run_load(spec, progress=progress, around=around)
    progress.finish(result)
    if result.failures:
        raise BenchError(f"{label}: {len(result.failures)} channel(s) failed: {result.failures[0]}")
    side.results.append(result)


def _row(concurrency: int, direct: _Side | None, proxied: _Side | None, enforcing: bool) -> Row:
    d = direct.figures(enforcing=False) if direct and direct.results else None
    p = proxied.figures(enforcing=enforcing) if proxied and proxied.results else None
    o50 = o99 = None
    rounds: list[float] = []
    if d and p and d.latency_us and p.latency_us:
        o50 = p.latency_us.p50 - d.latency_us.p50
        o99 = p.latency_us.p99 - d.latency_us.p99
        rounds = [b - a for a, b in zip(d.rounds_p50_us, p.rounds_p50_us, strict=False)]
    return Row(concurrency, d, p, o50, o99, rounds)


# ------------------------------------------------------------------ the runs


def _audit_none_supported() -> str | None:
    """The flag that turns the durable audit off, if ``agentwall start`` has one."""
    done = agentwall_command("start", "--help", timeout=60)
    # Whole flags only: "--audit" must not match "--audit-key-file" (argparse
    # would even accept the prefix and read "none" as a key file name).
    flags = set(re.findall(r"--[a-z][a-z0-9-]*", done.stdout))
    for flag in ("--unsafe-no-audit", "--unsafe-audit-none", "--audit"):
        if flag in flags:
            return flag
    return None


def run_bench(opts: BenchOptions) -> BenchReport:
    if opts.mode not in ("http", "stdio"):
        raise BenchError(f"unknown mode {opts.mode!r}")
    if (opts.calls is None) == (opts.duration_s is None):
        raise BenchError("give exactly one of --calls and --duration")
    notes: list[str] = []
    policy = opts.policy
    if policy is None:
        bundled = bundled_policy()
        policy = str(bundled) if bundled is not None else None
        notes.append(f"policy: {policy or 'none (Safe Mode only)'}")
    proxy_args = list(opts.proxy_args)
    if opts.audit == "none":
        if opts.mode == "stdio":
            raise BenchError("--audit none is unsupported: `agentwall wrap` always audits durably")
        flag = _audit_none_supported()
        if flag is None:
            raise BenchError(
                "--audit none is unsupported: `agentwall start` has no mode without the durable "
                "audit log, and the bench will not pretend otherwise"
            )
        proxy_args += [flag] if flag != "--audit" else ["--audit", "none"]
        notes.append(f"audit: OFF via {flag} (not a supported production setting)")
    workdir = Path(tempfile.mkdtemp(prefix="agentwall-bench-"))
    env = environment()
    p50, p99 = procstat.fdatasync_probe(str(workdir))
    env["fdatasync_us"] = {"p50": round(p50, 1), "p99": round(p99, 1)}
    try:
        if opts.mode == "http":
            rows, audit = _run_http(opts, policy, proxy_args, workdir)
        else:
            rows, audit = _run_stdio(opts, policy, workdir)
    finally:
        if opts.keep_dir:
            notes.append(f"work files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return BenchReport(
        mode=opts.mode,
        options=opts,
        environment=env,
        rows=rows,
        goals=goals(opts.mode, rows),
        audit=audit,
        notes=notes,
    )


def _check_reachable(url: str, timeout: float = 5.0) -> None:
    """Fail in seconds, naming the URL, when nothing listens there (rather
    than after the proxy's minute of not being ready)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise BenchError(f"--upstream {url}: cannot connect ({exc})") from None


def _run_http(
    opts: BenchOptions, policy: str | None, proxy_args: list[str], workdir: Path
) -> tuple[list[Row], str]:
    rows: list[Row] = []
    audit = "not run"
    with contextlib.ExitStack() as stack:
        if opts.upstream == "builtin":
            upstream = stack.enter_context(FastUpstream(workdir)).start()
            upstream_url = upstream.url
            upstream_pids = [upstream.pid]
        else:
            upstream_url = opts.upstream
            upstream_pids = []  # not ours: its CPU is not measured
            _check_reachable(upstream_url)

        def upstream_roots() -> list[int]:
            return upstream_pids

        direct_target = HttpTarget.from_url(upstream_url)
        proxy: Proxy | None = None
        if opts.only != "direct":
            proxy = stack.enter_context(
                Proxy(upstream_url, workdir, policy=policy, extra_args=proxy_args)
            )
            proxy.start()
        for c in opts.concurrency:
            direct, proxied = _Side(), _Side()
            for r in range(opts.rounds):
                if opts.only != "proxied":

                    def around_direct(_pids: list[int], s: _Side = direct) -> Any:
                        return _probing(s, upstream_roots, None, None, None)

                    _measure(opts, f"direct  c={c}", direct_target, c, r, direct, around_direct)
                if proxy is not None:

                    def around_proxy(
                        _pids: list[int], s: _Side = proxied, px: Proxy = proxy
                    ) -> Any:
                        return _probing(
                            s,
                            upstream_roots,
                            lambda: [px.pid],
                            None,
                            lambda: metrics.scrape(px.host, px.port),
                            procstat.proxy_role(px.pid),
                        )

                    target = HttpTarget.from_url(proxy.url)
                    _measure(opts, f"proxied c={c}", target, c, r, proxied, around_proxy)
            rows.append(_row(c, direct, proxied, enforcing=True))
        if proxy is not None:
            code = proxy.stop()
            audit = _verify(proxy.log_path, code)
    return rows, audit


def _verify(log_path: Path, proxy_exit: int | None) -> str:
    if not log_path.exists():
        return f"no audit log at {log_path} (proxy exit code {proxy_exit})"
    if not has_module("agentwall.cli.verify_log"):
        return "written, not verified: `agentwall verify-log` is not in this tree"
    done = agentwall_command("verify-log", str(log_path), env=key_env(log_path.parent))
    last = (done.stdout.strip() or done.stderr.strip()).splitlines()[-1:] or [""]
    verdict = "verified" if done.returncode == 0 else f"verify-log FAILED (exit {done.returncode})"
    return f"{verdict}: {last[0]}"


def _run_stdio(opts: BenchOptions, policy: str | None, workdir: Path) -> tuple[list[Row], str]:
    server = (sys.executable, "-m", STDIO_SERVER)
    direct_target = StdioTarget(server, stderr_path=str(workdir / "direct.stderr"))
    wrap = [
        sys.executable,
        "-m",
        "agentwall",
        "wrap",
        "--log-path",
        str(workdir / "audit-{channel}.log"),
    ]
    if policy is not None:
        wrap += ["--policy", policy]
    proxied_target = StdioTarget(
        (*wrap, "--", *server), env=key_env(workdir), stderr_path=str(workdir / "wrap.stderr")
    )

    def is_server(pid: int) -> bool:
        # The upstream itself (python -m agentwall.demo.stdio_server), not the
        # wrap process whose command line merely mentions it after "--".
        return procstat.cmdline(pid)[1:3] == ["-m", STDIO_SERVER]

    rows: list[Row] = []
    for c in opts.concurrency:
        direct, proxied = _Side(), _Side()
        for r in range(opts.rounds):
            if opts.only != "proxied":

                def around_direct(pids: list[int], s: _Side = direct) -> Any:
                    return _probing(s, lambda: pids, None, None, None)

                _measure(opts, f"direct  c={c}", direct_target, c, r, direct, around_direct)
            if opts.only != "direct":

                def around_wrap(pids: list[int], s: _Side = proxied) -> Any:
                    def servers() -> list[int]:
                        return [p for p in procstat.tree(pids) if is_server(p)]

                    return _probing(s, servers, lambda: pids, is_server, None)

                _measure(opts, f"wrapped c={c}", proxied_target, c, r, proxied, around_wrap)
        row = _row(c, direct, proxied, enforcing=True)
        if row.proxied is not None:
            row.proxied.metrics_note = "wrap serves no /metrics: fsync batches and cache n/a"
        rows.append(row)
    audit = "not run"
    if opts.only != "direct":
        logs = sorted(workdir.glob("audit-*.log"))
        verdicts = [_verify(p, None) for p in logs]
        bad = [v for v in verdicts if not v.startswith("verified")]
        audit = bad[0] if bad else f"verified {len(logs)} log(s)" if logs else "no audit logs"
    return rows, audit


# --------------------------------------------------------------------- goals

GOAL_C1_P50_US = 250.0
GOAL_C1_P99_US = 1000.0
GOAL_C64_CPS = 5000.0
GOAL_STDIO_P50_US = 100.0


def goals(mode: Mode, rows: list[Row]) -> list[Goal]:
    by_c = {r.concurrency: r for r in rows}
    out: list[Goal] = []

    def overhead(c: int, which: str, limit: float, name: str) -> None:
        row = by_c.get(c)
        value = None if row is None else getattr(row, f"overhead_{which}_us")
        out.append(
            Goal(
                name,
                f"<= {limit / 1000:g} ms",
                "not measured" if value is None else f"{value / 1000:.3f} ms",
                None if value is None else value <= limit,
            )
        )

    if mode == "http":
        overhead(1, "p50", GOAL_C1_P50_US, "added latency at 1 client, p50")
        overhead(1, "p99", GOAL_C1_P99_US, "added latency at 1 client, p99")
        row = by_c.get(64)
        cps = row.proxied.calls_per_s if row and row.proxied else None
        out.append(
            Goal(
                "audited calls/s at 64 clients",
                f">= {GOAL_C64_CPS:,.0f}",
                "not measured" if cps is None else f"{cps:,.0f}",
                None if cps is None else cps >= GOAL_C64_CPS,
            )
        )
    else:
        overhead(1, "p50", GOAL_STDIO_P50_US, "stdio added latency, p50")
    return out
