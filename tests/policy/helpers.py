"""Small builders shared by the policy tests."""

from __future__ import annotations

from typing import Any

from agentwall.core.canonical import canonical_json
from agentwall.policy import Policy, evaluate, loads_policy
from agentwall.types import Call, Decision, Identity, Origin


def make_call(
    method: str,
    params: Any,
    *,
    origin: Origin = "client",
    identity: Identity | None = None,
    kind: str = "request",
    with_json: bool = True,
) -> Call:
    target = ""
    if isinstance(params, dict):
        if method in ("tools/call", "prompts/get"):
            target = params.get("name") if isinstance(params.get("name"), str) else ""
        elif method.startswith("resources/"):
            target = params.get("uri") if isinstance(params.get("uri"), str) else ""
    try:
        raw = canonical_json(params) if with_json else b""
    except (ValueError, TypeError, RecursionError):
        raw = b""
    return Call(
        call_id="t-1",
        session="s-1",
        transport="stdio",
        origin=origin,
        kind=kind,  # type: ignore[arg-type]
        rpc_id=1,
        method=method,
        target=target,
        params=params,
        params_json=raw,
        identity=identity,
    )


def tool_call(name: str, arguments: Any = None, **kw: Any) -> Call:
    params: dict[str, Any] = {"name": name}
    if arguments is not None:
        params["arguments"] = arguments
    return make_call("tools/call", params, **kw)


def decide(policy: Policy, call: Call) -> Decision:
    return evaluate(policy, call, 0)


def policy_from(text: str) -> Policy:
    return loads_policy(text, source_path="test.yaml")
