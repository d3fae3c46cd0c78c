"""``agentwall test``: validate a policy, or run cases or an audit log through it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agentwall.policy import Policy, load_policy
from agentwall.policy.cases import CaseError, CaseResult, decode_json, parse_cases, run_cases
from agentwall.policy.replay import looks_like_audit_log, parse_audit_log

HELP = (
    "Validate a policy (no FILE), or run a JSON array of test cases or a recorded "
    "audit log through it.  Exit 0: all expectations hold; 1: one failed; 2: unusable "
    "policy or input."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy", metavar="P", help="policy YAML (without it, Safe Mode alone decides)"
    )
    parser.add_argument(
        "file", nargs="?", metavar="FILE", help="JSON array of cases, or an AgentWall audit log"
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")


def _fail_input(message: str) -> int:
    print(f"agentwall test: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    for warning in policy.warnings:
        loud = warning.startswith("WARNING")
        print(warning if loud else f"warning: {warning}", file=sys.stderr)
    if args.file is None:
        _print_summary(policy, args.format)
        return 0
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return _fail_input(f"cannot read {args.file}: {exc}")
    notes: list[str] = []
    logged: dict[int, str] = {}
    masked: dict[int, tuple[str, ...]] = {}
    try:
        if looks_like_audit_log(text):
            replay = parse_audit_log(text)
            if replay.decisions_seen == 0:
                return _fail_input(f"{args.file}: no decision entries (not an audit log?)")
            cases = replay.cases
            logged, masked = replay.logged, replay.masked
            if replay.skipped_no_params:
                notes.append(
                    f"{replay.skipped_no_params} of {replay.decisions_seen} decision "
                    "entries have no params (the proxy ran without --log-params) and "
                    "were skipped"
                )
            if replay.unreadable_lines:
                notes.append(
                    f"{len(replay.unreadable_lines)} unreadable lines skipped "
                    f"(first: line {replay.unreadable_lines[0]})"
                )
        else:
            cases = parse_cases(decode_json(text, args.file), args.file)
    except CaseError as exc:
        return _fail_input(str(exc))
    results = run_cases(policy, cases)
    failed = sum(1 for r in results if not r.ok)
    if args.format == "json":
        print(
            json.dumps(
                {
                    "policy": policy.source_path,
                    "policy_hash": policy.hash,
                    "cases": [_as_json(r, logged, masked) for r in results],
                    "summary": {
                        "cases": len(results),
                        "failed": failed,
                        "allowed": sum(1 for r in results if r.decision.verdict == "allow"),
                        "denied": sum(1 for r in results if r.decision.verdict == "deny"),
                    },
                    "notes": notes,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        for r in results:
            print(_as_line(r, logged, masked))
        expected = sum(1 for r in results if r.case.expect is not None)
        print(
            f"{len(results)} cases, {expected} with expectations, {failed} failed "
            f"(policy {policy.hash[:12]})"
        )
        for note in notes:
            print(f"note: {note}")
    return 1 if failed else 0


def _as_line(r: CaseResult, logged: dict[int, str], masked: dict[int, tuple[str, ...]]) -> str:
    d = r.decision
    status = "ok  " if r.case.expect is not None and r.ok else "FAIL" if not r.ok else "    "
    parts = [
        status,
        f"{d.verdict.upper():5}",
        r.case.label,
        f"rule={d.rule_id or 'default_action'}",
        f"pointer={d.pointer or '-'}",
        d.reason,
    ]
    if not r.ok:
        parts.append(f"(expected {r.case.expect})")
    if r.case.index in logged:
        parts.append(f"(logged: {logged[r.case.index]})")
    if r.case.index in masked:
        parts.append(f"(params masked before logging at {', '.join(masked[r.case.index])})")
    return "  ".join(parts)


def _as_json(
    r: CaseResult, logged: dict[int, str], masked: dict[int, tuple[str, ...]]
) -> dict[str, Any]:
    d = r.decision
    out: dict[str, Any] = {
        "index": r.case.index,
        "name": r.case.label,
        "method": r.case.call.method,
        "target": r.case.call.target,
        "verdict": d.verdict,
        "rule_id": d.rule_id,
        "pointer": d.pointer,
        "reason": d.reason,
        "category": d.category,
        "expect": r.case.expect,
        "ok": r.ok,
    }
    if r.case.index in logged:
        out["logged"] = logged[r.case.index]
    if r.case.index in masked:
        out["masked"] = list(masked[r.case.index])
    return out


def _print_summary(policy: Policy, fmt: str) -> None:
    m = policy.model
    summary: dict[str, Any] = {
        "policy": policy.source_path,
        "hash": policy.hash,
        "safe_mode_only": m.safe_mode_only,
        "default_action": m.default_action,
        "tools": {
            "allow": sorted(t.name for t in m.tools if t.action == "allow"),
            "deny": sorted(t.name for t in m.tools if t.action == "deny"),
        },
        "resources": len(m.resources),
        "prompts": len(m.prompts),
        "methods": dict(sorted(m.methods.items())),
        "safe_mode_disabled": list(m.safe_mode.disable),
        "limits": {
            "max_depth": m.limits.max_depth,
            "max_bytes": m.limits.max_bytes,
            "max_string_length": m.limits.max_string_length,
        },
        "session_rate": policy.session_rate,
        "client_rate": policy.client_rate,
        "identity": m.identity.issuer if m.identity is not None else None,
        "warnings": list(policy.warnings),
    }
    if fmt == "json":
        print(json.dumps(summary, indent=2))
        return
    print(f"policy OK: {policy.source_path or '(none: Safe Mode only)'}")
    print(f"  hash            {policy.hash}")
    print(f"  default_action  {m.default_action}")
    print(
        f"  tools           {len(summary['tools']['allow'])} allowed, "
        f"{len(summary['tools']['deny'])} denied"
    )
    print(f"  resources       {len(m.resources)} rules; prompts {len(m.prompts)} rules")
    if m.methods:
        print(f"  methods         {', '.join(f'{k}={v}' for k, v in summary['methods'].items())}")
    print(f"  safe mode       on; disabled rules: {', '.join(m.safe_mode.disable) or 'none'}")
    print(
        f"  limits          depth {m.limits.max_depth}, {m.limits.max_bytes} bytes"
        + (f", strings {m.limits.max_string_length}" if m.limits.max_string_length else "")
    )
    if policy.session_rate is not None:
        print(f"  session rate    {policy.session_rate:g} calls/s")
    if policy.client_rate is not None:
        print(f"  client rate     {policy.client_rate:g} calls/s (across a client's sessions)")
    if m.identity is not None:
        aud = m.identity.audience
        shown = aud if isinstance(aud, str) else ", ".join(aud)
        print(f"  identity        issuer {m.identity.issuer}, audience {shown}")
