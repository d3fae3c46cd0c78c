"""Follow-ups from the official MCP conformance harness (docs/conformance.md)."""

from __future__ import annotations

from typing import Any

from agentwall.core.canonical import canonical_json
from agentwall.policy import evaluate, loads_policy
from agentwall.types import Call

POLICY = loads_policy(
    """
version: "2"
default_action: deny
tools:
  - name: probe
    action: allow
    risk: low
"""
)


def _call(method: str, params: Any, origin: str = "client") -> Call:
    return Call(
        call_id="c",
        session="s",
        transport="http",
        origin=origin,  # type: ignore[arg-type]
        kind="request" if origin == "client" else "notification",
        rpc_id=1 if origin == "client" else None,
        method=method,
        target=params.get("name", "") if method == "tools/call" else "",
        params=params,
        params_json=canonical_json(params),
    )


def test_listen_acknowledgement_passes_by_default() -> None:
    call = _call("notifications/subscriptions/acknowledged", {}, origin="server")
    assert evaluate(POLICY, call, 0).verdict == "allow"


def _retry(uri: str) -> dict[str, Any]:
    return {
        "name": "probe",
        "arguments": {},
        "inputResponses": {"r1": {"roots": [{"uri": uri, "name": "project"}]}},
    }


def test_client_roots_in_a_retry_are_not_ssrf() -> None:
    decision = evaluate(POLICY, _call("tools/call", _retry("file:///workspace/project")), 0)
    assert decision.verdict == "allow", decision.reason


def test_the_root_path_is_still_judged() -> None:
    decision = evaluate(POLICY, _call("tools/call", _retry("file:///home/u/.ssh")), 0)
    assert decision.verdict == "deny"
    assert decision.rule_id == "safe_mode.path.ssh"


def test_file_urls_elsewhere_are_still_refused() -> None:
    params = {"name": "probe", "arguments": {"url": "file:///workspace/project"}}
    decision = evaluate(POLICY, _call("tools/call", params), 0)
    assert decision.verdict == "deny"
    assert decision.rule_id == "safe_mode.ssrf.scheme"
    spoofed = _retry("file:///workspace/project")
    spoofed["arguments"] = {"roots": [{"uri": "file:///etc/hosts"}]}
    decision = evaluate(POLICY, _call("tools/call", spoofed), 0)
    assert decision.verdict == "deny"
    assert decision.pointer == "/arguments/roots/0/uri"
