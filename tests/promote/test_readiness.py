"""The readiness review on real policies, loaded from YAML by load_policy.

One test per blocking finding (each a small edit of a clean policy), the clean
policy itself, and the shipped promotable example.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentwall.policy import load_policy, loads_policy
from agentwall.promote import readiness
from agentwall.promote.view import view_of

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "promotable" / "policy.yaml"

CLEAN: dict[str, Any] = {
    "version": "2",
    "default_action": "deny",
    "identity": {"issuer": "https://auth.example.com", "audience": "agentwall-proxy"},
    "session": {"max_calls_per_second": 10},
    "client": {"max_calls_per_second": 20},
    "tools": [
        {
            "name": "read_file",
            "action": "allow",
            "risk": "low",
            "parameters": [
                {
                    "name": "path",
                    "type": "string",
                    "required": True,
                    "pattern": "/workspace/[^\\x00]*",
                    "within": ["/workspace"],
                    "max_length": 4096,
                }
            ],
        },
        {
            "name": "deploy",
            "action": "allow",
            "risk": "critical",
            "identity": {"claims": {"groups": ["release"]}, "scopes": ["deploy:write"]},
            "rate_limit": {"calls_per_second": 0.1},
            "parameters": [
                {"name": "env", "type": "string", "required": True, "enum": ["staging", "prod"]}
            ],
        },
    ],
}


def _review(document: dict[str, Any] | None) -> readiness.Review:
    policy = load_policy(None) if document is None else loads_policy(yaml.safe_dump(document))
    return readiness.review(view_of(policy))


def _edited(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    document = copy.deepcopy(CLEAN)
    edit(document)
    return document


def _deploy(document: dict[str, Any]) -> dict[str, Any]:
    tool: dict[str, Any] = document["tools"][1]
    return tool


def _blocking(document: dict[str, Any] | None) -> list[tuple[str, str | None]]:
    return [(f.code, f.tool) for f in _review(document).blocking]


def test_clean_policy_passes() -> None:
    result = _review(CLEAN)
    assert result.findings == ()
    assert result.ready
    assert result.score.total == 7


def test_no_policy() -> None:
    assert _blocking(None) == [("no_policy", None)]


def test_default_action_allow() -> None:
    assert _blocking(_edited(lambda d: d.update(default_action="allow"))) == [
        ("default_allow", None)
    ]


def test_tool_without_risk() -> None:
    def edit(document: dict[str, Any]) -> None:
        document["tools"].append({"name": "legacy", "action": "deny"})

    assert _blocking(_edited(edit)) == [("missing_risk", "legacy")]


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.pop("parameters"),
        lambda t: t.update(additional_parameters="allow"),
        lambda t: t["parameters"].append({"name": "note", "type": "string", "max_length": 10}),
        lambda t: t["parameters"].append({"name": "spec", "type": "object"}),
    ],
    ids=["no-parameters", "additional-allow", "bare-string", "object-without-schema"],
)
def test_high_risk_tool_with_unconstrained_arguments(
    edit: Callable[[dict[str, Any]], None],
) -> None:
    assert _blocking(_edited(lambda d: edit(_deploy(d)))) == [("unconstrained_arguments", "deploy")]


@pytest.mark.parametrize("pattern", [".*", ".+", "(?s).{0,100}", "[^\\x00]+"])
def test_match_all_pattern_on_risky_tool(pattern: str) -> None:
    def edit(document: dict[str, Any]) -> None:
        _deploy(document)["parameters"].append(
            {"name": "note", "type": "string", "pattern": pattern, "max_length": 100}
        )

    assert _blocking(_edited(edit)) == [("overbroad_pattern", "deploy")]


def test_path_class_admitting_traversal_without_within_on_risky_tool() -> None:
    def edit(document: dict[str, Any]) -> None:
        read = document["tools"][0]
        read["risk"] = "medium"
        del read["parameters"][0]["within"]

    result = _review(_edited(edit))
    assert [(f.code, f.tool) for f in result.blocking] == [("overbroad_pattern", "read_file")]
    assert "`..`" in result.blocking[0].reason
    # The same pattern is fine with `within`: the evaluator confines the path.
    assert _review(_edited(lambda d: d["tools"][0].update(risk="medium"))).ready


def test_safe_mode_rule_disabled_for_critical_tool() -> None:
    def per_tool(document: dict[str, Any]) -> None:
        _deploy(document)["safe_mode"] = {"disable": ["safe_mode.ssrf.private_network"]}

    def policy_wide(document: dict[str, Any]) -> None:
        document["safe_mode"] = {"disable": ["safe_mode.rce.pipe_to_shell"]}

    assert _blocking(_edited(per_tool)) == [("safe_mode_disabled", "deploy")]
    result = _review(_edited(policy_wide))
    assert [(f.code, f.tool) for f in result.blocking] == [("safe_mode_disabled", "deploy")]
    # The low-risk tool gets a warning for the same policy-wide switch.
    assert [(f.code, f.tool) for f in result.findings if f.severity == "warning"] == [
        ("safe_mode_rules_disabled", "read_file")
    ]


def test_no_rate_limit() -> None:
    def no_rates(document: dict[str, Any]) -> None:
        document.pop("session")
        document.pop("client")

    assert _blocking(_edited(no_rates)) == [("no_rate_limit", None)]
    # A client rate alone is a rate limit.
    assert _blocking(_edited(lambda d: d.pop("session"))) == []


def test_session_rate_without_client_rate_warns() -> None:
    result = _review(_edited(lambda d: d.pop("client")))
    assert result.ready
    assert [(f.code, f.severity) for f in result.findings] == [("no_client_rate_limit", "warning")]


@pytest.mark.parametrize("field", ["issuer", "jwks_uri"])
def test_non_https_identity(field: str) -> None:
    def edit(document: dict[str, Any]) -> None:
        document["identity"][field] = "http://auth.example.com/x"

    assert _blocking(_edited(edit)) == [("insecure_issuer", None)]


@pytest.mark.parametrize(
    "edit",
    [lambda t: t.pop("identity"), lambda t: t.update(identity={})],
    ids=["none", "empty"],
)
def test_critical_tool_without_identity_rule(edit: Callable[[dict[str, Any]], None]) -> None:
    assert _blocking(_edited(lambda d: edit(_deploy(d)))) == [("missing_identity_rule", "deploy")]


def test_shipped_promotable_example_has_no_findings() -> None:
    result = readiness.review(view_of(load_policy(EXAMPLE)))
    assert result.findings == ()
    assert result.ready


def _with_deploy_param(param: dict[str, Any]) -> dict[str, Any]:
    return _edited(lambda d: _deploy(d)["parameters"].append(param))


def test_array_items_are_judged_like_parameters() -> None:
    constrained = {
        "name": "targets",
        "type": "array",
        "max_items": 5,
        "items": {"type": "string", "enum": ["eu", "us"]},
    }
    assert _review(_with_deploy_param(constrained)).findings == ()
    loose = {"name": "targets", "type": "array", "items": {"type": "string", "max_length": 9}}
    [finding] = _review(_with_deploy_param(loose)).blocking
    assert finding.code == "unconstrained_arguments"
    assert "`targets[]`" in finding.reason
    overbroad = {
        "name": "files",
        "type": "array",
        "items": {"type": "string", "pattern": "[^\\x00-\\x1f]+", "max_length": 100},
    }
    [finding] = _review(_with_deploy_param(overbroad)).blocking
    assert finding.code == "overbroad_pattern"
    assert "`files[]`" in finding.reason


def test_length_bounded_pattern_needs_no_max_length() -> None:
    bounded = {"name": "tag", "type": "string", "pattern": "v[0-9]{1,4}"}
    assert _review(_with_deploy_param(bounded)).findings == ()
    unbounded = {"name": "tag", "type": "string", "pattern": "v[0-9]+"}
    assert [f.code for f in _review(_with_deploy_param(unbounded)).findings] == ["no_max_length"]
    limited = _with_deploy_param(unbounded)
    limited["limits"] = {"max_string_length": 1000}
    assert _review(limited).findings == ()


def test_type_implied_by_constraints_counts_as_a_type() -> None:
    implied = {"name": "tag", "pattern": "v[0-9]{1,4}"}
    assert _review(_with_deploy_param(implied)).findings == ()
    bare = {"name": "tag"}
    [finding] = _review(_with_deploy_param(bare)).blocking
    assert "`tag` has no type" in finding.reason
