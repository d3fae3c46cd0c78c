"""The readable table and the JSON form of a bench run."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from agentwall.benchtool.runner import BenchReport, RunFigures
from agentwall.benchtool.workload import by_name


def _num(value: float | None, fmt: str = ",.0f", na: str = "n/a") -> str:
    return na if value is None else format(value, fmt)


def mix_description(workload: str) -> str:
    mix = by_name(workload)
    total = sum(k.weight for k in mix.kinds)
    share: dict[str, int] = {}
    for k in mix.kinds:
        share[k.expect] = share.get(k.expect, 0) + k.weight
    parts = [
        f"{100 * share[e] / total:.0f}% {label}"
        for e, label in (("allow", "allowed"), ("deny", "denied"), ("list", "tools/list"))
        if e in share
    ]
    return f"{workload} ({', '.join(parts)})"


def render(report: BenchReport) -> str:
    o = report.options
    env = report.environment
    length = f"{o.calls:,} calls" if o.calls is not None else f"{o.duration_s:g} s"
    lines = [
        f"agentwall bench: mode {report.mode}, workload {mix_description(o.workload)}, "
        f"{length} per run x {o.rounds} round(s)",
        f"machine: {env.get('cpu_model') or '?'}, {env.get('cpus')} CPUs, load average "
        f"{env.get('loadavg_at_start', ['?'])[0]} at start; Python {env.get('python')}; "
        f"{env.get('date')}",
    ]
    sync = env.get("fdatasync_us")
    if sync:
        lines.append(
            f"disk under the audit log: fdatasync of a 256-byte append p50 {sync['p50']:,.0f} us, "
            f"p99 {sync['p99']:,.0f} us (measured just before the run)"
        )
    lines += [""]
    proxied_label = "wrapped" if report.mode == "stdio" else "proxied"
    header = (
        f"{'clients':>7} {'path':<8} {'calls/s':>9} {'p50 us':>8} {'p95 us':>8} {'p99 us':>8}"
        f" {'max us':>9} {'+p50 us':>8} {'+p99 us':>8} {'CPU/call us':>11}"
        f" {'fsync batch':>11} {'cache hit':>9}"
    )
    lines += [header, "-" * len(header)]
    for row in report.rows:
        for label, figs in (("direct", row.direct), (proxied_label, row.proxied)):
            if figs is None:
                continue
            lat = figs.latency_us
            is_proxy = label != "direct"
            cpu = figs.proxy_cpu_per_call_us if is_proxy else figs.upstream_cpu_per_call_us
            lines.append(
                f"{row.concurrency:>7} {label:<8} {figs.calls_per_s:>9,.0f}"
                f" {_num(lat.p50 if lat else None, ',.1f'):>8}"
                f" {_num(lat.p95 if lat else None, ',.1f'):>8}"
                f" {_num(lat.p99 if lat else None, ',.1f'):>8}"
                f" {_num(lat.max if lat else None, ',.0f'):>9}"
                f" {_num(row.overhead_p50_us if is_proxy else None, '+,.1f', ''):>8}"
                f" {_num(row.overhead_p99_us if is_proxy else None, '+,.1f', ''):>8}"
                f" {_num(cpu, ',.1f'):>11}"
                f" {_num(figs.fsync_batch_mean, ',.1f') if is_proxy else '':>11}"
                f" {_percent(figs.cache_hit_rate) if is_proxy else '':>9}"
            )
    lines.append("")
    lines.append(
        "CPU/call: the upstream's on direct rows, the proxy's whole process tree on "
        f"{proxied_label} rows (from /proc, over the measured window)."
    )
    lines += _machine_lines(report, proxied_label)
    for row in report.rows:
        if row.proxied is not None and row.proxied.proxy_cpu_by_role_us:
            lines.append(cpu_by_process_line(row.concurrency, row.proxied.proxy_cpu_by_role_us))
    for row in report.rows:
        if row.proxied is not None and row.proxied.stages_us:
            parts = ", ".join(f"{k} {v:,.0f}" for k, v in row.proxied.stages_us.items())
            lines.append(f"proxy stage means at {row.concurrency} clients (us, /metrics): {parts}")
    lines += _loadgen_lines(report)
    notes = sorted(
        {f.metrics_note for r in report.rows if r.proxied for f in [r.proxied] if f.metrics_note}
    )
    lines += [f"metrics: {n}" for n in notes]
    lines += _unexpected_lines(report)
    lines.append(f"audit log: {report.audit}")
    lines += [f"note: {n}" for n in report.notes]
    if report.goals:
        lines.append("")
        lines.append("goals (issue 7):")
        for g in report.goals:
            mark = {True: "MET    ", False: "NOT MET", None: "n/a    "}[g.met]
            lines.append(f"  [{mark}] {g.name}: {g.measured} (target {g.target})")
    return "\n".join(lines)


_ROLE_ORDER = ("front-end", "evaluators", "audit writer")


def cpu_by_process_line(concurrency: int, by_role_us: dict[str, float]) -> str:
    """The proxy's CPU per call by process, in the order a call meets them."""

    def order(role: str) -> tuple[int, str]:
        return (_ROLE_ORDER.index(role) if role in _ROLE_ORDER else len(_ROLE_ORDER), role)

    parts = ", ".join(f"{role} {by_role_us[role]:,.0f}" for role in sorted(by_role_us, key=order))
    return f"proxy CPU per call at {concurrency} clients by process (us, /proc): {parts}"


def _machine_lines(report: BenchReport, proxied_label: str) -> list[str]:
    """How the machine's cores were spent during each run: a figure taken
    while the host stole a third of them is not comparable with one taken
    while it stole none."""
    parts = []
    steals = []
    for row in report.rows:
        for label, figs in (("direct", row.direct), (proxied_label, row.proxied)):
            if figs is None or figs.machine_cores is None:
                continue
            m = figs.machine_cores
            parts.append(
                f"{row.concurrency} {label} busy {m['busy']:.2f} idle {m['idle']:.2f} "
                f"steal {m['steal']:.2f}"
            )
            steals.append(m["steal"])
    if not parts:
        return []
    cpus = report.environment.get("cpus", "?")
    lines = [f"machine during each run (cores of {cpus}, /proc/stat): " + "; ".join(parts)]
    warning = steal_warning(steals, cpus if isinstance(cpus, int) else None)
    if warning is not None:
        lines.append(warning)
    return lines


# Above this share of the machine stolen in any run, absolute figures say more
# about the host than about us.
STEAL_WARNING_SHARE = 0.10


def steal_warning(steals: list[float], cpus: int | None) -> str | None:
    """A warning line when the hypervisor took a noticeable share of the
    machine during any run: the calls/s, latencies and goal verdicts of such a
    run are not comparable with a quiet run's, while direct against proxied
    within the run still is."""
    if not steals or not cpus or cpus <= 0:
        return None
    worst = max(steals)
    if worst < STEAL_WARNING_SHARE * cpus:
        return None
    return (
        f"warning: the host stole up to {worst:.2f} of {cpus} cores during these runs "
        f"({100 * worst / cpus:.0f}%): absolute figures and the goal verdicts below reflect "
        "the host; compare direct with proxied within this run"
    )


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _loadgen_lines(report: BenchReport) -> list[str]:
    worst: tuple[float, int, str] | None = None
    for row in report.rows:
        for label, figs in (("direct", row.direct), ("proxied", row.proxied)):
            if figs is None or not figs.wall_s:
                continue
            share = figs.loadgen_cpu_s / figs.wall_s  # cores busy on average
            if worst is None or share > worst[0]:
                worst = (share, row.concurrency, label)
    if worst is None:
        return []
    procs = max((f.loadgen_processes for f in _all(report)), default=0)
    per_call = [f.loadgen_cpu_per_call_us for f in _all(report)]
    return [
        f"load generator: up to {procs} process(es), {min(per_call):,.0f}-{max(per_call):,.0f} us "
        f"CPU per call; busiest at {worst[1]} clients {worst[2]}: {worst[0]:.2f} cores"
    ]


def _all(report: BenchReport) -> Sequence[RunFigures]:
    return [f for r in report.rows for f in (r.direct, r.proxied) if f is not None]


def _unexpected_lines(report: BenchReport) -> list[str]:
    out: list[str] = []
    for row in report.rows:
        for label, figs in (("direct", row.direct), ("proxied", row.proxied)):
            if figs is None or not figs.unexpected:
                continue
            detail = "; ".join(
                f"{kind}: " + ", ".join(f"{o} x{n}" for o, n in sorted(counts.items()))
                for kind, counts in sorted(figs.unexpected.items())
            )
            out.append(f"UNEXPECTED outcomes at {row.concurrency} clients, {label}: {detail}")
    return out


def to_json(report: BenchReport) -> bytes:
    return msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n"
