"""Test cases for ``agentwall test``: parsing and running, without I/O.

A case file is a JSON array of objects:

* ``{"tool": NAME, "arguments": {...}}`` -- a tools/call;
* ``{"uri": URI}`` -- a resources/read;
* ``{"prompt": NAME, "arguments": {...}}`` -- a prompts/get;
* ``{"method": M, "params": {...}}`` -- any other message (``origin``
  ``"server"`` for server-to-client requests such as sampling);

each with optional ``"expect": "allow"|"deny"``, ``"name"`` (a label),
``"identity": {"subject", "issuer", "scopes", "claims"}`` (a verified caller,
for identity rules) and ``"origin"``.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

from agentwall.core.canonical import canonical_json
from agentwall.policy.compiled import Policy
from agentwall.policy.evaluate import evaluate
from agentwall.types import Call, Decision, Identity

CASE_KEYS = (
    "name",
    "tool",
    "uri",
    "prompt",
    "method",
    "arguments",
    "params",
    "expect",
    "identity",
    "origin",
)
IDENTITY_KEYS = ("subject", "issuer", "scopes", "claims")


class CaseError(ValueError):
    """A case file that cannot be used; ``where`` says which case."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass(frozen=True, slots=True)
class Case:
    index: int
    label: str
    call: Call
    expect: str | None


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: Case
    decision: Decision

    @property
    def ok(self) -> bool:
        if self.case.expect is None:
            return True
        passed = self.decision.verdict in ("allow", "log", "redact")
        return (self.case.expect == "allow") == passed


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def decode_json(text: str, source: str) -> Any:
    """Strict JSON (no duplicate keys, no NaN), with line:column on errors."""

    def _no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise CaseError(f"{source}:{exc.lineno}:{exc.colno}", exc.msg) from None
    except (ValueError, RecursionError) as exc:
        raise CaseError(source, str(exc) or type(exc).__name__) from None


def _identity(value: Any, where: str) -> Identity:
    if not isinstance(value, dict):
        raise CaseError(where, "identity must be an object")
    for key in value:
        if key not in IDENTITY_KEYS:
            raise CaseError(where, f"unknown identity key {key!r}" + _hint(key, IDENTITY_KEYS))
    subject = value.get("subject")
    if not isinstance(subject, str):
        raise CaseError(where, "identity.subject must be a string")
    scopes = value.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise CaseError(where, "identity.scopes must be a list of strings")
    claims = value.get("claims", {})
    if not isinstance(claims, dict):
        raise CaseError(where, "identity.claims must be an object")
    issuer = value.get("issuer", "test")
    if not isinstance(issuer, str):
        raise CaseError(where, "identity.issuer must be a string")
    return Identity(subject=subject, issuer=issuer, scopes=tuple(scopes), claims=claims)


def _hint(word: str, choices: tuple[str, ...]) -> str:
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {found[0]!r}?" if found else ""


def make_test_call(
    method: str,
    params: Any,
    *,
    index: int,
    origin: str = "client",
    identity: Identity | None = None,
    target: str = "",
) -> Call:
    try:
        raw = canonical_json(params)
    except (TypeError, ValueError):
        raw = b""
    return Call(
        call_id=f"case-{index}",
        session="agentwall-test",
        transport="stdio",
        origin=origin,  # type: ignore[arg-type]
        kind="request",
        rpc_id=index,
        method=method,
        target=target,
        params=params,
        params_json=raw,
        identity=identity,
    )


def parse_case(item: Any, index: int) -> Case:
    where = f"case {index}"
    if not isinstance(item, dict):
        raise CaseError(where, "each case must be an object")
    for key in item:
        if key not in CASE_KEYS:
            raise CaseError(where, f"unknown key {key!r}" + _hint(key, CASE_KEYS))
    kinds = [k for k in ("tool", "uri", "prompt", "method") if k in item]
    if len(kinds) != 1:
        raise CaseError(where, "give exactly one of tool, uri, prompt or method")
    kind = kinds[0]
    expect = item.get("expect")
    if expect is not None and expect not in ("allow", "deny"):
        raise CaseError(where, f'expect must be "allow" or "deny", not {expect!r}')
    origin = item.get("origin", "client")
    if origin not in ("client", "server"):
        raise CaseError(where, 'origin must be "client" or "server"')
    identity = _identity(item["identity"], where) if "identity" in item else None
    if kind != "method" and "params" in item:
        raise CaseError(where, f"params goes with method; a {kind} case uses arguments")
    if kind == "method" and "arguments" in item:
        raise CaseError(where, "a method case takes params, not arguments")
    target = item[kind]
    if not isinstance(target, str):
        raise CaseError(where, f"{kind} must be a string")
    if kind in ("tool", "prompt"):
        params: Any = {"name": target}
        if "arguments" in item:
            params["arguments"] = item["arguments"]
        method = "tools/call" if kind == "tool" else "prompts/get"
    elif kind == "uri":
        params = {"uri": target}
        method = "resources/read"
    else:
        method = target
        params = item.get("params", {})
        target = ""
    label = item.get("name")
    if label is not None and not isinstance(label, str):
        raise CaseError(where, "name must be a string")
    shown = label or (f"{method} {item[kind]}" if kind != "method" else method)
    call = make_test_call(
        method,
        params,
        index=index,
        origin=origin,
        identity=identity,
        target=target if kind != "method" else "",
    )
    return Case(index=index, label=shown, call=call, expect=expect)


def parse_cases(data: Any, source: str) -> list[Case]:
    if not isinstance(data, list):
        raise CaseError(source, "a case file is a JSON array of case objects")
    return [parse_case(item, i) for i, item in enumerate(data, start=1)]


def run_cases(policy: Policy, cases: list[Case], now_ns: int = 0) -> list[CaseResult]:
    return [CaseResult(case, evaluate(policy, case.call, now_ns)) for case in cases]
