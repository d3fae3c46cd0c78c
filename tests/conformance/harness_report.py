"""Compare two runs of the official MCP conformance harness (no tests here).

``scripts/conformance`` runs ``@modelcontextprotocol/conformance server`` twice
per leg, once against the fixture server and once against ``agentwall start``
in front of it, each with ``-o DIR``. The harness writes one directory per
scenario, ``server-<scenario>-<timestamp>/checks.json``, a list of checks with
a ``status`` (SUCCESS, FAILURE, WARNING, SKIPPED, INFO). This module reads
both, lines the scenarios up and prints them side by side; a scenario that
passes directly and fails through the proxy is what AgentWall broke.

    python harness_report.py --leg "2026-07-28" DIRECT_DIR PROXY_DIR \
        [--requirements requirements/2026-07-28.yaml] [--markdown OUT.md]

Exit status: 1 if a scored scenario passes directly but fails through the
proxy, else 0.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# server-<scenario>-2026-11-21T07-51-54-797Z
_RUN_DIR = re.compile(r"^server-(?P<name>.+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d+Z$")


@dataclass(frozen=True)
class ScenarioResult:
    passed: int
    failed: int
    warnings: int
    failures: tuple[tuple[str, str], ...] = field(default=())  # (check id, message)

    @property
    def ok(self) -> bool:
        return self.failed == 0


def load_run(directory: Path) -> dict[str, ScenarioResult]:
    """Scenario name -> result, for one ``-o`` directory. If a scenario ran
    twice (it should not), the later run wins."""
    results: dict[str, ScenarioResult] = {}
    for run in sorted(directory.iterdir()):
        match = _RUN_DIR.match(run.name)
        checks_file = run / "checks.json"
        if match is None or not checks_file.is_file():
            continue
        checks: list[dict[str, Any]] = json.loads(checks_file.read_text(encoding="utf-8"))
        failures = tuple(
            (str(c.get("id")), str(c.get("errorMessage") or ""))
            for c in checks
            if c.get("status") == "FAILURE"
        )
        results[match["name"]] = ScenarioResult(
            passed=sum(1 for c in checks if c.get("status") == "SUCCESS"),
            failed=len(failures),
            warnings=sum(1 for c in checks if c.get("status") == "WARNING"),
            failures=failures,
        )
    return results


def not_scored(requirements: Path | None) -> dict[str, str]:
    """Server scenarios a requirements file runs but does not score, with why."""
    if requirements is None:
        return {}
    data = yaml.safe_load(requirements.read_text(encoding="utf-8")) or {}
    return {
        str(entry["scenario"]): str(entry.get("reason", ""))
        for entry in data.get("not_scored") or ()
        if entry.get("leg") == "server"
    }


def _cell(result: ScenarioResult | None) -> str:
    if result is None:
        return "not run"
    mark = "pass" if result.ok else "FAIL"
    return f"{mark} {result.passed}/{result.passed + result.failed}"


def _note(direct: ScenarioResult | None, proxy: ScenarioResult | None) -> str:
    if proxy is None or direct is None:
        return ""
    direct_failed = {cid for cid, _ in direct.failures}
    only_proxy = [(cid, msg) for cid, msg in proxy.failures if cid not in direct_failed]
    only_direct = sorted(direct_failed - {cid for cid, _ in proxy.failures})
    parts = [f"{cid}: {msg[:140]}" for cid, msg in only_proxy]
    if only_direct:
        parts.append("passes only through the proxy: " + ", ".join(only_direct))
    return "; ".join(parts)


@dataclass(frozen=True)
class Comparison:
    rows: tuple[tuple[str, str, str, str, str], ...]  # scenario, scored, direct, proxy, note
    proxy_only_failures: tuple[str, ...]  # scored scenarios
    counts: dict[str, int]


def compare(
    direct: dict[str, ScenarioResult],
    proxy: dict[str, ScenarioResult],
    unscored: dict[str, str],
) -> Comparison:
    rows = []
    broken = []
    counts = {"scenarios": 0, "direct_pass": 0, "proxy_pass": 0, "proxy_only_fail": 0}
    for name in sorted(set(direct) | set(proxy)):
        d, p = direct.get(name), proxy.get(name)
        scored = "" if name not in unscored else f"no ({unscored[name]})"
        rows.append((name, scored or "yes", _cell(d), _cell(p), _note(d, p)))
        counts["scenarios"] += 1
        counts["direct_pass"] += bool(d and d.ok)
        counts["proxy_pass"] += bool(p and p.ok)
        if d is not None and d.ok and (p is None or not p.ok):
            counts["proxy_only_fail"] += 1
            if not scored:
                broken.append(name)
    return Comparison(tuple(rows), tuple(broken), counts)


def render_text(leg: str, comparison: Comparison) -> str:
    header = ("scenario", "scored", "direct", "via agentwall", "proxy-only failing checks")
    rows = [header, *comparison.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"== {leg}"]
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(4)]
        lines.append("  ".join(cells) + ("  " + row[4] if row[4] else ""))
    c = comparison.counts
    lines.append(
        f"{c['scenarios']} scenarios: {c['direct_pass']} pass directly, "
        f"{c['proxy_pass']} through agentwall, {c['proxy_only_fail']} fail only through "
        f"agentwall ({len(comparison.proxy_only_failures)} of them scored)"
    )
    return "\n".join(lines)


def render_markdown(leg: str, comparison: Comparison) -> str:
    lines = [
        f"### {leg}",
        "",
        "| scenario | scored | direct | via agentwall | proxy-only failing checks |",
        "|---|---|---|---|---|",
    ]
    for name, scored, d, p, note in comparison.rows:
        note = note.replace("|", "\\|")
        lines.append(f"| {name} | {scored} | {d} | {p} | {note} |")
    c = comparison.counts
    lines += [
        "",
        f"{c['scenarios']} scenarios: {c['direct_pass']} pass directly, {c['proxy_pass']} "
        f"through agentwall, {c['proxy_only_fail']} fail only through agentwall "
        f"({len(comparison.proxy_only_failures)} of them scored).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare direct and proxied harness runs.")
    parser.add_argument("--leg", required=True, help="a label for this pair of runs")
    parser.add_argument("direct", type=Path)
    parser.add_argument("proxy", type=Path)
    parser.add_argument("--requirements", type=Path, help="the harness's requirements/<rev>.yaml")
    parser.add_argument("--markdown", type=Path, help="append a Markdown table here")
    args = parser.parse_args(argv)
    comparison = compare(load_run(args.direct), load_run(args.proxy), not_scored(args.requirements))
    print(render_text(args.leg, comparison))
    if args.markdown is not None:
        with args.markdown.open("a", encoding="utf-8") as out:
            out.write(render_markdown(args.leg, comparison))
    return 1 if comparison.proxy_only_failures else 0


if __name__ == "__main__":
    sys.exit(main())
