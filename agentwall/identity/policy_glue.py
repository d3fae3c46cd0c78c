"""Between a policy's identity denial and the HTTP answer.

The policy's ``evaluate`` denies an identity rule with ``category="identity"``
and ``rule_id="<rule>.identity"``; MCP wants a *fixable* refusal (missing
scopes or claims) answered 403 + ``insufficient_scope`` with every scope the
call needs, and the rest (wrong subject) as a plain JSON-RPC error.  This
re-derives which it was from the rule that refused, with the same semantics as
``agentwall.policy.compiled.identity_problem`` (tested together through
``evaluate`` in tests/identity/test_identity_policy.py).
"""

from __future__ import annotations

from agentwall.identity.rules import (
    CATEGORY_IDENTITY_SUBJECT,
    IdentityRefusal,
    IdentityRuleLike,
    check_identity_rule,
)
from agentwall.policy import Policy
from agentwall.types import Decision, Identity

POLICY_IDENTITY_CATEGORY = "identity"


def identity_refusal(
    policy: Policy, decision: Decision, identity: Identity | None
) -> IdentityRefusal | None:
    """The precise refusal behind an identity denial; None for any other
    decision."""
    if decision.verdict != "deny" or decision.category != POLICY_IDENTITY_CATEGORY:
        return None
    rule = _rule_for(policy, decision.rule_id or "")
    if rule is None:
        # Cannot tell which rule: refuse without inviting a step-up.
        return IdentityRefusal(category=CATEGORY_IDENTITY_SUBJECT, reason=decision.reason)
    refusal = check_identity_rule(rule, identity)
    if refusal is None:
        # The rule passes now (policy reloaded in between): still a denial.
        return IdentityRefusal(category=CATEGORY_IDENTITY_SUBJECT, reason=decision.reason)
    return refusal


def _rule_for(policy: Policy, rule_id: str) -> IdentityRuleLike | None:
    if not rule_id.endswith("].identity"):
        return None
    base = rule_id[: -len(".identity")]
    if base.startswith("tools["):
        tool = policy.tool(base[len("tools[") : -1])
        return tool.identity if tool is not None else None
    if base.startswith("prompts["):
        name = base[len("prompts[") : -1]
        for prompt in policy.model.prompts:
            if prompt.name == name:
                return prompt.identity
        return None
    if base.startswith("resources["):
        index = base[len("resources[") : -1]
        if index.isdigit() and int(index) < len(policy.model.resources):
            return policy.model.resources[int(index)].identity
    return None
