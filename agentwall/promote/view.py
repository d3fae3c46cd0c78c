"""From a loaded ``Policy`` to the ``PolicyView`` the readiness review reads.

The review works on its own small view so that its rules read plainly and
its tests can state a situation directly; this module is the one place that
knows the policy model's shape.
"""

from __future__ import annotations

from agentwall.policy import Policy
from agentwall.policy.methods import CLIENT_DEFAULTS, SERVER_DEFAULTS
from agentwall.policy.model import IdentityRule, ParameterRule, PolicyModel, ToolRule
from agentwall.promote.readiness import (
    IdentityView,
    ParameterView,
    PolicyView,
    ResourceView,
    ToolView,
)


def _has_rule(rule: IdentityRule | None) -> bool:
    # An empty `identity: {}` admits any verified caller: not a rule about who.
    return rule is not None and bool(rule.subjects or rule.claims or rule.scopes)


def _parameter(rule: ParameterRule) -> ParameterView:
    return ParameterView(
        name=rule.name,
        type=rule.type or _inferred_type(rule),
        pattern=rule.pattern,
        has_enum=rule.enum is not None,
        within=rule.within or (),
        max_length=rule.max_length,
        has_schema=rule.schema is not None,
        has_bounds=rule.minimum is not None or rule.maximum is not None,
        items=None if rule.items is None else _parameter(rule.items),
    )


def _inferred_type(rule: ParameterRule) -> str | None:
    # As the evaluator does: string constraints imply a string, bounds a number.
    if any(x is not None for x in (rule.pattern, rule.max_length, rule.min_length, rule.within)):
        return "string"
    if rule.minimum is not None or rule.maximum is not None:
        return "number"
    if any(x is not None for x in (rule.items, rule.max_items, rule.min_items)):
        return "array"
    return None


def _tool(rule: ToolRule, model: PolicyModel) -> ToolView:
    disabled = dict.fromkeys((*model.safe_mode.disable, *rule.safe_mode.disable))
    return ToolView(
        name=rule.name,
        action=rule.action,
        risk=rule.risk,
        parameters=None if rule.parameters is None else tuple(map(_parameter, rule.parameters)),
        additional_parameters=rule.additional_parameters,
        rate_limit=None if rule.rate_limit is None else rule.rate_limit.calls_per_second,
        has_identity_rule=_has_rule(rule.identity),
        safe_mode_disabled=tuple(disabled),
    )


def view_of_model(model: PolicyModel) -> PolicyView | None:
    if model.safe_mode_only:
        return None
    defaults = CLIENT_DEFAULTS | SERVER_DEFAULTS
    identity = model.identity
    return PolicyView(
        default_action=model.default_action,
        tools=tuple(_tool(rule, model) for rule in model.tools),
        session_rate=model.session.max_calls_per_second,
        client_rate=None if model.client is None else model.client.max_calls_per_second,
        identity=None
        if identity is None
        else IdentityView(
            issuer=identity.issuer, jwks_uri=identity.jwks_uri, audience=identity.audience
        ),
        resources=tuple(
            ResourceView(pattern=r.uri, action=r.action, has_within=bool(r.within))
            for r in model.resources
        ),
        extra_methods_allowed=tuple(
            sorted(
                m for m, action in model.methods.items() if action == "allow" and m not in defaults
            )
        ),
        safe_mode_allow_private=model.safe_mode.allow_private,
        max_string_length=model.limits.max_string_length,
    )


def view_of(policy: Policy | None) -> PolicyView | None:
    return None if policy is None else view_of_model(policy.model)
