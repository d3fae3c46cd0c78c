"""Replaying an AgentWall audit log through a policy (``agentwall test LOG``).

An audit log is JSON lines; decision entries carry ``event: "decision"``,
``method``, ``target``, the logged ``decision``, ``detail.origin`` when the
MCP server sent the message, and, only when the proxy ran with
``--log-params``, the (secret-masked) ``params``.  Entries without params
cannot be re-judged and are counted as skipped.  Masked params are judged as
logged, so a call that was denied for carrying a secret may pass here: the
result says when params were masked.  This module only parses lines; reading
the file is the CLI's job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agentwall.policy.cases import Case, make_test_call
from agentwall.types import Identity


@dataclass(frozen=True, slots=True)
class Replay:
    cases: list[Case]
    logged: dict[int, str]  # case index -> decision recorded in the log
    masked: dict[int, tuple[str, ...]]  # case index -> pointers masked before logging
    decisions_seen: int
    skipped_no_params: int
    unreadable_lines: list[int]


def _origin(entry: dict[str, Any]) -> str:
    """Who sent the judged message.  Both transports record a message from
    the MCP server as ``detail: {"origin": "server"}`` and leave it out for
    the client (docs/audit.md); a top-level ``origin`` is accepted too."""
    detail = entry.get("detail")
    origin = entry.get("origin")
    if origin is None and isinstance(detail, dict):
        origin = detail.get("origin")
    return origin if origin in ("client", "server") else "client"


def looks_like_audit_log(text: str) -> bool:
    first = text.lstrip()[:1]
    return first == "{"


def parse_audit_log(text: str) -> Replay:
    cases: list[Case] = []
    logged: dict[int, str] = {}
    masked: dict[int, tuple[str, ...]] = {}
    seen = 0
    skipped = 0
    unreadable: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry: Any = json.loads(line)
        except (ValueError, RecursionError):
            unreadable.append(lineno)
            continue
        if not isinstance(entry, dict) or entry.get("event") != "decision":
            continue
        seen += 1
        if "params" not in entry or entry.get("params") is None:
            skipped += 1
            continue
        method = entry.get("method")
        if not isinstance(method, str):
            unreadable.append(lineno)
            continue
        target = entry.get("target") if isinstance(entry.get("target"), str) else ""
        identity = None
        if isinstance(entry.get("subject"), str):
            identity = Identity(subject=entry["subject"], issuer=str(entry.get("issuer") or ""))
        origin = _origin(entry)
        index = len(cases) + 1
        call = make_test_call(
            method,
            entry["params"],
            index=index,
            origin=str(origin),
            identity=identity,
            target=str(target),
        )
        seq = entry.get("seq")
        label = (
            f"seq {seq}: {method} {target}".rstrip()
            if seq is not None
            else f"line {lineno}: {method} {target}".rstrip()
        )
        cases.append(Case(index=index, label=label, call=call, expect=None))
        if isinstance(entry.get("decision"), str):
            logged[index] = entry["decision"]
        pointers = entry.get("masked")
        if isinstance(pointers, list) and pointers:
            masked[index] = tuple(str(p) for p in pointers)
    return Replay(cases, logged, masked, seen, skipped, unreadable)
