"""``agentwall report``: what a log says happened, for a person or a program.

``build_report`` folds entries (dicts, in chain order) into a ``Report``; it
does no I/O, so ``agentwall start --report-path`` and the CLI share it.
``report_for_log`` reads and (when a key is at hand) verifies a log first, so
the report says whether its numbers can be trusted.

A call is counted once, by its last ``decision`` entry.  Two entries can share
a call id (docs/audit.md): a worker made its entry durable and then died, or
answered after the pool's deadline, and the front-end then refused the call
with a second entry.  The later entry is what the agent was told, so it
replaces the earlier one in every count, and ``superseded`` says how often
that happened.  Call ids are unique within one run of the proxy only (a
random prefix and a counter), so the memory of them starts afresh at each
``proxy_start``: two runs can never merge two calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import orjson

from agentwall.audit.keys import AuditKey
from agentwall.audit.reader import ReadCounts, expand_log_paths, iter_entries
from agentwall.audit.verify import MapFn, verify_files

OUTCOMES = ("allow", "deny", "dry_run_deny", "error", "log", "redact", "approve")
DENIED = frozenset({"deny", "dry_run_deny", "error"})


class Counts(msgspec.Struct):
    total: int = 0
    allow: int = 0
    deny: int = 0
    dry_run_deny: int = 0
    error: int = 0
    other: int = 0

    def add(self, outcome: str, step: int = 1) -> None:
        self.total += step
        if outcome == "allow":
            self.allow += step
        elif outcome == "deny":
            self.deny += step
        elif outcome == "dry_run_deny":
            self.dry_run_deny += step
        elif outcome == "error":
            self.error += step
        else:
            self.other += step

    def remove(self, outcome: str) -> None:
        self.add(outcome, -1)


class Incident(msgspec.Struct, omit_defaults=True):
    seq: int | None
    ts: str | None
    decision: str
    method: str | None
    target: str | None
    reason: str | None
    rule_id: str | None = None
    pointer: str | None = None
    category: str | None = None
    session: str | None = None
    subject: str | None = None
    call_id: str | None = None
    params: Any = None
    masked: list[str] | None = None


class Latency(msgspec.Struct):
    count: int
    p50_us: int | None
    p95_us: int | None
    p99_us: int | None
    max_us: int | None


class PolicySeen(msgspec.Struct):
    hash: str
    decisions: int
    first_seq: int | None
    last_seq: int | None


class Lifecycle(msgspec.Struct):
    proxy_starts: int = 0
    proxy_stops: int = 0
    policy_loads: int = 0
    policy_reload_failures: int = 0
    recoveries: int = 0
    key_changes: int = 0
    rotations: int = 0
    errors: int = 0


class _Counted(msgspec.Struct, frozen=True):
    """Where one call's entry was counted, so a later entry for the same call
    id can take it back."""

    outcome: str
    method: str
    policy_hash: str | None
    tool: str | None
    session: str
    latency_at: int | None
    incident_at: int | None


class Report(msgspec.Struct):
    files: list[str]
    chain: str  # "valid", "invalid: <kind> at seq N: ...", or "not checked: why"
    entries: int
    unreadable_lines: int
    first_ts: str | None
    last_ts: str | None
    decisions: Counts
    dry_run_active: bool
    per_tool: dict[str, Counts]
    per_session: dict[str, Counts]
    per_method: dict[str, Counts]
    denied: list[Incident]
    latency: Latency
    policy_hashes: list[PolicySeen]
    lifecycle: Lifecycle
    superseded: int = 0  # decision entries replaced by a later one for the same call


def _percentile(sorted_values: Sequence[int], pct: float) -> int | None:
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * pct // 100))
    return sorted_values[int(rank) - 1]


_LIFECYCLE = {
    "proxy_start": "proxy_starts",
    "proxy_stop": "proxy_stops",
    "policy_loaded": "policy_loads",
    "policy_reload_failed": "policy_reload_failures",
    "recovery": "recoveries",
    "key_changed": "key_changes",
    "log_rotated": "rotations",
    "error": "errors",
}


def build_report(
    entries: Iterable[dict[str, Any]],
    *,
    files: Sequence[str] = (),
    chain: str = "not checked",
    include_params: bool = False,
    unreadable_lines: int = 0,
) -> Report:
    decisions = Counts()
    per_tool: dict[str, Counts] = {}
    per_session: dict[str, Counts] = {}
    per_method: dict[str, Counts] = {}
    # Slots, not appends: a superseded entry's slot becomes None.
    denied: list[Incident | None] = []
    latencies: list[int | None] = []
    counted: dict[str, _Counted] = {}
    superseded = 0
    policies: dict[str, PolicySeen] = {}
    lifecycle = Lifecycle()
    dry_run = False
    first_ts: str | None = None
    last_ts: str | None = None
    count = 0
    for entry in entries:
        count += 1
        ts = entry.get("ts")
        if isinstance(ts, str):
            first_ts = first_ts or ts
            last_ts = ts
        event = entry.get("event")
        seq = entry.get("seq") if isinstance(entry.get("seq"), int) else None
        if event == "dry_run_active":
            dry_run = True
        if event == "proxy_start":
            counted.clear()
        if event in _LIFECYCLE:
            field = _LIFECYCLE[str(event)]
            setattr(lifecycle, field, getattr(lifecycle, field) + 1)
        policy_hash = entry.get("policy_hash")
        if isinstance(policy_hash, str):
            seen = policies.get(policy_hash)
            if seen is None:
                seen = policies[policy_hash] = PolicySeen(policy_hash, 0, seq, seq)
            seen.last_seq = seq
            if event == "decision":
                seen.decisions += 1
        if event != "decision":
            continue
        outcome = str(entry.get("decision") or "error")
        if outcome == "dry_run_deny":
            dry_run = True
        call_id = entry.get("call_id")
        earlier = counted.get(call_id) if isinstance(call_id, str) else None
        if earlier is not None:
            superseded += 1
            decisions.remove(earlier.outcome)
            per_method[earlier.method].remove(earlier.outcome)
            if earlier.tool is not None:
                per_tool[earlier.tool].remove(earlier.outcome)
            per_session[earlier.session].remove(earlier.outcome)
            if earlier.policy_hash is not None:
                policies[earlier.policy_hash].decisions -= 1
            if earlier.latency_at is not None:
                latencies[earlier.latency_at] = None
            if earlier.incident_at is not None:
                denied[earlier.incident_at] = None
        decisions.add(outcome)
        method = str(entry.get("method") or "")
        target = entry.get("target")
        per_method.setdefault(method, Counts()).add(outcome)
        tool = target if method == "tools/call" and isinstance(target, str) else None
        if tool is not None:
            per_tool.setdefault(tool, Counts()).add(outcome)
        session = entry.get("session")
        session_key = str(session) if session is not None else "-"
        per_session.setdefault(session_key, Counts()).add(outcome)
        latency = entry.get("latency_us")
        latency_at = None
        if isinstance(latency, int) and not isinstance(latency, bool):
            latency_at = len(latencies)
            latencies.append(latency)
        incident_at = None
        if outcome in DENIED:
            masked = entry.get("masked")
            incident_at = len(denied)
            denied.append(
                Incident(
                    seq=seq,
                    ts=ts if isinstance(ts, str) else None,
                    decision=outcome,
                    method=method or None,
                    target=target if isinstance(target, str) else None,
                    reason=entry.get("reason"),
                    rule_id=entry.get("rule_id"),
                    pointer=entry.get("pointer"),
                    category=entry.get("category"),
                    session=session if isinstance(session, str) else None,
                    subject=entry.get("subject"),
                    call_id=call_id if isinstance(call_id, str) else None,
                    params=entry.get("params") if include_params else None,
                    masked=list(masked)
                    if include_params and isinstance(masked, list) and masked
                    else None,
                )
            )
        if isinstance(call_id, str):
            counted[call_id] = _Counted(
                outcome,
                method,
                policy_hash if isinstance(policy_hash, str) else None,
                tool,
                session_key,
                latency_at,
                incident_at,
            )
    kept = sorted(v for v in latencies if v is not None)
    return Report(
        files=list(files),
        chain=chain,
        entries=count,
        unreadable_lines=unreadable_lines,
        first_ts=first_ts,
        last_ts=last_ts,
        decisions=decisions,
        dry_run_active=dry_run,
        per_tool=_nonempty(per_tool),
        per_session=_nonempty(per_session),
        per_method=_nonempty(per_method),
        denied=[i for i in denied if i is not None],
        latency=Latency(
            count=len(kept),
            p50_us=_percentile(kept, 50),
            p95_us=_percentile(kept, 95),
            p99_us=_percentile(kept, 99),
            max_us=kept[-1] if kept else None,
        ),
        policy_hashes=list(policies.values()),
        lifecycle=lifecycle,
        superseded=superseded,
    )


def _nonempty(table: dict[str, Counts]) -> dict[str, Counts]:
    """Sorted, without the rows a superseding entry emptied."""
    return {k: v for k, v in sorted(table.items()) if v.total}


def report_for_log(
    paths: Sequence[str | Path],
    *,
    keys: Sequence[AuditKey] | None = None,
    include_params: bool = False,
    map_chunks: MapFn | None = None,
    pieces: int = 2,
) -> Report:
    """Read ``paths`` (an active log name brings its rotated files along),
    verify them when ``keys`` are given, and build the report."""
    files = expand_log_paths(paths)
    if keys:
        outcome = verify_files(files, keys, map_chunks=map_chunks, pieces=pieces)
        damage = outcome.report.damage
        if damage is None:
            chain = "valid"
            if outcome.report.torn_tail:
                chain += " (torn last line: an interrupted, unacknowledged write)"
        else:
            where = f" at seq {damage.seq}" if damage.seq is not None else ""
            chain = f"INVALID: {damage.kind}{where}: {damage.message}"
    else:
        chain = "not checked (no audit key given)"
    counts = ReadCounts()
    report = build_report(
        iter_entries(files, counts),
        files=[str(f) for f in files],
        chain=chain,
        include_params=include_params,
    )
    report.unreadable_lines = counts.unreadable
    return report


def render_json(report: Report) -> str:
    return orjson.dumps(msgspec.to_builtins(report), option=orjson.OPT_INDENT_2).decode() + "\n"


def _counts_line(c: Counts) -> str:
    parts = [f"{c.total} total", f"{c.allow} allowed", f"{c.deny} denied"]
    if c.dry_run_deny:
        parts.append(f"{c.dry_run_deny} dry-run denied")
    if c.error:
        parts.append(f"{c.error} errors")
    if c.other:
        parts.append(f"{c.other} other")
    return ", ".join(parts)


def render_text(report: Report, *, max_incidents: int = 200) -> str:
    lines = ["AgentWall audit report", ""]
    lines.append(f"log       {', '.join(report.files) or '-'}")
    lines.append(f"chain     {report.chain}")
    lines.append(f"period    {report.first_ts or '-'} .. {report.last_ts or '-'}")
    lines.append(
        f"entries   {report.entries}"
        + (f" ({report.unreadable_lines} unreadable lines)" if report.unreadable_lines else "")
    )
    dry = "ACTIVE: denials were logged, not enforced" if report.dry_run_active else "no"
    lines.append(f"dry run   {dry}")
    lines.append("")
    lines.append(f"decisions {_counts_line(report.decisions)}")
    if report.superseded:
        lines.append(
            f"          {report.superseded} calls had two entries; each is counted once, "
            "by its later entry (what the agent was told)"
        )
    lat = report.latency
    if lat.count:
        lines.append(
            f"latency   p50 {lat.p50_us} us, p95 {lat.p95_us} us, p99 {lat.p99_us} us, "
            f"max {lat.max_us} us ({lat.count} decisions)"
        )
    life = report.lifecycle
    lines.append(
        f"lifecycle {life.proxy_starts} starts, {life.proxy_stops} stops, "
        f"{life.policy_loads} policy loads, {life.policy_reload_failures} failed reloads, "
        f"{life.recoveries} recoveries, {life.key_changes} key changes, "
        f"{life.rotations} rotations"
    )
    if report.policy_hashes:
        lines += ["", "policies"]
        for p in report.policy_hashes:
            lines.append(f"  {p.hash}  {p.decisions} decisions, seq {p.first_seq}..{p.last_seq}")
    for title, table in (("tools", report.per_tool), ("sessions", report.per_session)):
        if table:
            lines += ["", title]
            width = min(40, max(len(k) for k in table))
            for name, counts in table.items():
                lines.append(f"  {name:<{width}}  {_counts_line(counts)}")
    lines += ["", f"denied ({len(report.denied)})"]
    for inc in report.denied[:max_incidents]:
        what = f"{inc.method or '-'} {inc.target or ''}".rstrip()
        lines.append(
            f"  seq {inc.seq} {inc.ts or ''} {inc.decision} {what} "
            f"session={inc.session or '-'} rule={inc.rule_id or 'default_action'}"
            + (f" pointer={inc.pointer}" if inc.pointer else "")
        )
        lines.append(f"      {inc.reason or ''}")
        if inc.params is not None:
            lines.append(f"      params {orjson.dumps(inc.params).decode()}")
    if len(report.denied) > max_incidents:
        lines.append(f"  ... {len(report.denied) - max_incidents} more (use --format json)")
    return "\n".join(lines) + "\n"


__all__ = ["Report", "build_report", "render_json", "render_text", "report_for_log"]
