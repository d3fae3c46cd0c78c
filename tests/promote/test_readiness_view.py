"""The readiness review over hand-built PolicyViews: every check, in isolation.

tests/promote/test_readiness.py runs the same checks on real YAML policies
through load_policy; this file pins the review logic itself.
"""

from __future__ import annotations

import msgspec
import pytest

from agentwall.promote import readiness as r

READ = r.ToolView(
    name="read_file",
    risk="low",
    parameters=(
        r.ParameterView(
            name="path",
            type="string",
            pattern="/workspace/[^\\x00]*",
            within=("/workspace",),
            max_length=4096,
        ),
    ),
)
DEPLOY = r.ToolView(
    name="deploy",
    risk="critical",
    parameters=(r.ParameterView(name="env", type="string", has_enum=True),),
    rate_limit=0.1,
    has_identity_rule=True,
)
CLEAN = r.PolicyView(
    default_action="deny",
    tools=(READ, DEPLOY),
    session_rate=10,
    client_rate=20,
    identity=r.IdentityView(issuer="https://auth.example.com", audience="agentwall"),
)


def _codes(view: r.PolicyView | None) -> dict[str, list[str | None]]:
    result: dict[str, list[str | None]] = {}
    for finding in r.review(view).findings:
        result.setdefault(finding.code, []).append(finding.tool)
    return result


def _with_tool(tool: r.ToolView, **policy: object) -> r.PolicyView:
    return msgspec.structs.replace(CLEAN, tools=(READ, tool), **policy)


def test_clean_policy_is_ready_with_a_low_score() -> None:
    result = r.review(CLEAN)
    assert result.findings == ()
    assert result.ready
    assert result.score.total == 1 + 6
    assert result.score.level == "low"


def test_no_policy_blocks() -> None:
    result = r.review(None)
    assert [f.code for f in result.blocking] == ["no_policy"]
    assert not result.ready


def test_default_allow_blocks() -> None:
    assert _codes(msgspec.structs.replace(CLEAN, default_action="allow")) == {
        "default_allow": [None]
    }


@pytest.mark.parametrize("action", ["allow", "deny"])
def test_missing_risk_blocks(action: str) -> None:
    tool = msgspec.structs.replace(READ, name="mystery", risk=None, action=action)
    assert _codes(_with_tool(tool))["missing_risk"] == ["mystery"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"parameters": None}, "declares no `parameters`"),
        ({"additional_parameters": "allow"}, "additional_parameters: allow"),
        ({"parameters": (r.ParameterView(name="env", type="string"),)}, "no pattern, enum"),
        ({"parameters": (r.ParameterView(name="spec", type="object"),)}, "has no schema"),
        ({"parameters": (r.ParameterView(name="env"),)}, "has no type"),
    ],
)
def test_unconstrained_arguments_on_high_risk_tool_block(
    change: dict[str, object], words: str
) -> None:
    result = r.review(_with_tool(msgspec.structs.replace(DEPLOY, **change)))
    [finding] = [f for f in result.findings if f.code == "unconstrained_arguments"]
    assert finding.severity == "blocking"
    assert finding.tool == "deploy"
    assert words in finding.reason
    # The same looseness on a low-risk tool is a warning.
    low = msgspec.structs.replace(DEPLOY, risk="low", **change)
    assert _codes(_with_tool(low)).get("loose_arguments") == ["deploy"]
    assert "unconstrained_arguments" not in _codes(_with_tool(low))


@pytest.mark.parametrize(
    "pattern",
    [
        ".*",
        ".+",
        "(.*)",
        "(?s).*",
        "[\\x00-\\x{10FFFF}]*",
        "[^\\x00]+",
        "(?s).{0,1000}",
        "(?:.|\\n)*",
    ],
)
def test_match_all_patterns_on_risky_tool_block(pattern: str) -> None:
    param = r.ParameterView(name="command", type="string", pattern=pattern, max_length=100)
    tool = msgspec.structs.replace(DEPLOY, name="shell", risk="medium", parameters=(param,))
    result = r.review(_with_tool(tool))
    [finding] = [f for f in result.findings if f.code == "overbroad_pattern"]
    assert finding.severity == "blocking"
    assert "accepts any string" in finding.reason


@pytest.mark.parametrize(
    "pattern", ["/workspace/[^\\x00]*", "/workspace/[a-zA-Z0-9_./-]+", "[\\w./]+", "/srv/.*\\.txt"]
)
def test_path_class_admitting_traversal_without_within_blocks(pattern: str) -> None:
    param = r.ParameterView(name="path", type="string", pattern=pattern, max_length=100)
    tool = msgspec.structs.replace(DEPLOY, name="write_file", risk="high", parameters=(param,))
    result = r.review(_with_tool(tool))
    [finding] = [f for f in result.findings if f.code == "overbroad_pattern"]
    assert "`..`" in finding.reason
    assert "within" in finding.fix
    # With `within`, the path is normalised and confined: no longer blocking.
    confined = msgspec.structs.replace(
        tool, parameters=(msgspec.structs.replace(param, within=("/workspace",)),)
    )
    assert "overbroad_pattern" not in _codes(_with_tool(confined))


@pytest.mark.parametrize(
    "pattern", ["/workspace/[a-zA-Z0-9_-]+\\.txt", "/workspace/[a-z]+(/[a-z]+)*", "[a-z0-9]{1,40}"]
)
def test_tight_path_patterns_are_not_overbroad(pattern: str) -> None:
    param = r.ParameterView(name="path", type="string", pattern=pattern, max_length=100)
    tool = msgspec.structs.replace(DEPLOY, name="write_file", risk="high", parameters=(param,))
    codes = _codes(_with_tool(tool))
    assert "overbroad_pattern" not in codes
    assert codes.get("path_without_within") == ["write_file"]


def test_overbroad_pattern_on_low_risk_tool_warns() -> None:
    param = r.ParameterView(name="query", type="string", pattern=".*", max_length=100)
    tool = msgspec.structs.replace(READ, name="search", parameters=(param,))
    assert _codes(_with_tool(tool)) == {"broad_pattern": ["search"]}


def test_safe_mode_rules_disabled_for_high_risk_tool_block() -> None:
    tool = msgspec.structs.replace(DEPLOY, safe_mode_disabled=("ssrf.private_network",))
    assert _codes(_with_tool(tool))["safe_mode_disabled"] == ["deploy"]
    low = msgspec.structs.replace(READ, safe_mode_disabled=("ssrf.private_network",))
    assert _codes(msgspec.structs.replace(CLEAN, tools=(low, DEPLOY))) == {
        "safe_mode_rules_disabled": ["read_file"]
    }


def test_safe_mode_off_blocks_for_high_risk_tools() -> None:
    codes = _codes(msgspec.structs.replace(CLEAN, safe_mode_enabled=False))
    assert codes == {"safe_mode_disabled": ["deploy"]}
    only_low = msgspec.structs.replace(CLEAN, tools=(READ,), safe_mode_enabled=False)
    assert _codes(only_low) == {"safe_mode_rules_disabled": [None]}


def test_no_rate_limit_blocks() -> None:
    unlimited = msgspec.structs.replace(CLEAN, session_rate=None, client_rate=None)
    assert _codes(unlimited) == {"no_rate_limit": [None]}
    # Per-tool limits on every allowed tool are a rate limit too.
    limited = msgspec.structs.replace(READ, rate_limit=5)
    assert _codes(msgspec.structs.replace(unlimited, tools=(limited, DEPLOY))) == {}
    # So is a client rate (it limits every session of the client).
    assert _codes(msgspec.structs.replace(CLEAN, session_rate=None)) == {}


@pytest.mark.parametrize(
    "identity",
    [
        r.IdentityView(issuer="http://auth.example.com"),
        r.IdentityView(issuer="https://auth.example.com", jwks_uri="http://auth.example.com/jwks"),
    ],
)
def test_non_https_issuer_blocks(identity: r.IdentityView) -> None:
    assert _codes(msgspec.structs.replace(CLEAN, identity=identity)) == {"insecure_issuer": [None]}


def test_high_risk_tool_without_identity_rule_blocks() -> None:
    tool = msgspec.structs.replace(DEPLOY, has_identity_rule=False)
    assert _codes(_with_tool(tool)) == {"missing_identity_rule": ["deploy"]}


def test_identity_rules_without_identity_section_block() -> None:
    assert _codes(msgspec.structs.replace(CLEAN, identity=None)) == {
        "identity_not_configured": [None]
    }


def test_warnings_do_not_block() -> None:
    param = r.ParameterView(name="query", type="string", pattern="[a-z ]+")
    limit = r.ParameterView(name="limit", type="integer")
    bounded = r.ParameterView(name="page", type="integer", has_bounds=True)
    search = r.ToolView(name="search", risk="medium", parameters=(param, limit, bounded))
    view = msgspec.structs.replace(
        CLEAN,
        tools=(READ, search, msgspec.structs.replace(DEPLOY, rate_limit=None)),
        resources=(r.ResourceView(pattern=".*"), r.ResourceView(pattern=".*", has_within=True)),
        safe_mode_allow_private=("10.0.0.5/32",),
        extra_methods_allowed=("sampling/createMessage",),
    )
    result = r.review(view)
    assert result.ready
    assert {f.code for f in result.findings} == {
        "no_max_length",
        "no_tool_rate_limit",
        "broad_resource_pattern",
        "extra_methods_allowed",
        "safe_mode_private_allowed",
        "unbounded_number",
    }
    assert [f.code for f in result.findings].count("broad_resource_pattern") == 1
    assert all(f.severity == "warning" for f in result.findings)


def test_nothing_allowed_warns_and_needs_no_rate_limit_finding_of_tools() -> None:
    view = r.PolicyView(default_action="deny", session_rate=1, client_rate=1)
    assert _codes(view) == {"nothing_allowed": [None]}


def test_session_rate_without_client_rate_warns_about_reinitialize() -> None:
    view = msgspec.structs.replace(CLEAN, client_rate=None)
    assert _codes(view) == {"no_client_rate_limit": [None]}
    result = r.review(view)
    assert result.ready  # a warning, not blocking
    (finding,) = result.findings
    assert finding.severity == "warning"
    assert "initialize" in finding.reason
    assert "client: {max_calls_per_second" in finding.fix
    assert result.score.total == r.review(CLEAN).score.total + r.WARNING_POINTS
    # No session rate at all: that is no_rate_limit's business (or the tools
    # all have their own limits), not this warning's.
    assert "no_client_rate_limit" not in _codes(
        msgspec.structs.replace(CLEAN, session_rate=None, client_rate=None)
    )
    # A client rate alone is fine too.
    assert _codes(msgspec.structs.replace(CLEAN, session_rate=None)) == {}


def test_score_breakdown_is_the_documented_sum() -> None:
    bad = r.PolicyView(
        default_action="allow",
        tools=tuple(r.ToolView(name=f"t{i}", risk="critical") for i in range(8)),
    )
    result = r.review(bad)
    parts = {p.name: p for p in result.score.breakdown}
    assert parts["exposure"].points == 30  # 8 x 6, capped
    assert parts["blocking"].points == 60  # many blocking findings, capped
    assert result.score.total == 100
    assert result.score.level == "critical"
    assert sum(p.points for p in result.score.breakdown) >= result.score.total


def test_blocking_findings_come_first() -> None:
    view = msgspec.structs.replace(
        CLEAN, session_rate=None, client_rate=None, extra_methods_allowed=("x/y",)
    )
    severities = [f.severity for f in r.review(view).findings]
    assert severities == sorted(severities, key=lambda s: s != "blocking")
    assert severities[0] == "blocking"


def test_every_code_is_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "promote.md").read_text()
    missing = [code for code in r.CODES if f"`{code}`" not in doc]
    assert not missing, f"docs/promote.md does not document {missing}"
