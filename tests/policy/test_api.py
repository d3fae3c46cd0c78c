"""The surface other parts code against (see HELPER_BRIEF)."""

from __future__ import annotations

import pickle

import pytest

from agentwall.policy import (
    SAFE_MODE_ONLY_WARNING,
    Policy,
    evaluate,
    filter_tools_list,
    load_policy,
)
from agentwall.types import Identity

from .helpers import decide, policy_from, tool_call

POLICY = """
version: "2"
default_action: deny
identity:
  issuer: "https://auth.example.com"
  audience: "agentwall-proxy"
  algorithms: [RS256, EdDSA]
  required_claims: {tenant: acme}
  clock_skew_seconds: 30
session: {max_calls_per_second: 10, burst: 20}
tools:
  - name: read_file
    action: allow
    risk: low
    rate_limit: {calls_per_second: 5, burst: 10}
    parameters:
      - {name: path, type: string, required: true, within: ["/workspace"]}
  - name: deploy
    action: allow
    risk: high
    identity: {subjects: [alice, bob], claims: {groups: [release]}, scopes: ["deploy:write"]}
    parameters: []
  - name: drop_db
    action: deny
    risk: critical
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return policy_from(POLICY)


def test_load_policy_none_is_safe_mode_only_with_loud_warning() -> None:
    p = load_policy(None)
    assert p.safe_mode_only
    assert p.warnings == (SAFE_MODE_ONLY_WARNING,)
    assert "SAFE MODE ONLY" in p.warnings[0]
    assert len(p.hash) == 64
    # Anything Safe Mode does not flag passes, for any tool.
    assert decide(p, tool_call("anything", {"x": "hello"})).verdict == "allow"
    assert decide(p, tool_call("anything", {"x": "/home/u/.ssh/id_rsa"})).verdict == "deny"


def test_rates_and_identity_config(policy: Policy) -> None:
    assert policy.session_rate == 10.0
    assert policy.session_burst == 20
    assert policy.tool_rate("read_file") == 5.0
    assert policy.tool_rate_limit("read_file") is not None
    assert policy.tool_rate("deploy") is None
    assert policy.tool_rate("unknown") is None
    ident = policy.identity
    assert ident is not None
    assert ident.issuer == "https://auth.example.com"
    assert ident.audience == "agentwall-proxy"
    assert ident.algorithms == ("RS256", "EdDSA")
    assert ident.required_claims == {"tenant": ("acme",)}
    assert ident.clock_skew_seconds == 30
    assert ident.jwks_uri is None
    assert policy.identity_claims_used == frozenset({"groups"})


def test_public_model_is_typed(policy: Policy) -> None:
    tools = {t.name: t for t in policy.tools}
    assert tools["read_file"].risk == "low"
    assert tools["read_file"].parameters is not None
    assert tools["read_file"].parameters[0].within == ("/workspace",)
    assert tools["deploy"].identity is not None
    assert tools["deploy"].identity.scopes == ("deploy:write",)
    assert tools["drop_db"].action == "deny"
    assert tools["drop_db"].parameters is None
    assert policy.tool("read_file") is tools["read_file"]


def test_hash_is_stable_across_formatting_but_not_meaning(policy: Policy) -> None:
    reformatted = POLICY.replace(
        '{name: path, type: string, required: true, within: ["/workspace"]}',
        "- name: path\n        type: string\n        required: true\n"
        "        within:\n          - /workspace",
    ).replace("      - - name", "      - name")
    other = policy_from(reformatted)
    assert other.hash == policy.hash
    changed = policy_from(POLICY.replace("calls_per_second: 5", "calls_per_second: 6"))
    assert changed.hash != policy.hash
    # An explicit default means the same thing as leaving it out.
    explicit = policy_from(
        POLICY.replace("    risk: low\n", "    risk: low\n    additional_parameters: deny\n")
    )
    assert explicit.hash == policy.hash


def test_every_decision_carries_the_policy_hash(policy: Policy) -> None:
    d = decide(policy, tool_call("read_file", {"path": "/workspace/a"}))
    assert d.verdict == "allow"
    assert d.policy_hash == policy.hash
    assert d.call_id == "t-1"


def test_identity_rule_denies_without_identity(policy: Policy) -> None:
    d = decide(policy, tool_call("deploy", {}))
    assert d.verdict == "deny"
    assert d.rule_id == "tools[deploy].identity"
    assert d.category == "identity_required"
    assert "authenticated" in d.reason
    assert d.cacheable is False


@pytest.mark.parametrize(
    ("identity", "category", "why"),
    [
        (
            Identity("alice", "i", ("deploy:write",), claims={"groups": ["dev", "release"]}),
            "tool",
            "",
        ),
        (Identity("alice", "i", ("deploy:write", "x"), claims={"groups": "release"}), "tool", ""),
        (
            Identity("carol", "i", ("deploy:write",), claims={"groups": ["release"]}),
            "identity_subject",
            "subject",
        ),
        (
            Identity("alice", "i", ("deploy:write",), claims={"groups": ["dev"]}),
            "identity_claims",
            "groups",
        ),
        (Identity("alice", "i", ("deploy:write",), claims={}), "identity_claims", "groups"),
        (
            Identity("alice", "i", ("deploy:write",), claims={"groups": [True]}),
            "identity_claims",
            "groups",
        ),
        (Identity("alice", "i", (), claims={"groups": "release"}), "identity_scope", "scope"),
    ],
)
def test_identity_rule_parts(policy: Policy, identity: Identity, category: str, why: str) -> None:
    d = decide(policy, tool_call("deploy", {}, identity=identity))
    assert d.verdict == ("allow" if category == "tool" else "deny"), d
    assert d.category == category
    assert why in d.reason
    if category in ("identity_scope", "identity_claims"):
        assert d.required_scopes == ("deploy:write",)


def test_filter_tools_list(policy: Policy) -> None:
    result = {
        "tools": [
            {"name": "read_file", "inputSchema": {}},
            {"name": "deploy"},
            {"name": "drop_db"},
            {"name": "unknown"},
            {"nameless": True},
            "junk",
        ],
        "nextCursor": "abc",
    }
    out = filter_tools_list(policy, result, None)
    assert [t["name"] for t in out["tools"]] == ["read_file"]
    assert out["nextCursor"] == "abc"
    assert len(result["tools"]) == 6  # input untouched
    alice = Identity("alice", "i", ("deploy:write",), claims={"groups": ["release"]})
    out = filter_tools_list(policy, result, alice)
    assert [t["name"] for t in out["tools"]] == ["read_file", "deploy"]
    assert filter_tools_list(policy, "nonsense", None) == {"tools": []}
    assert filter_tools_list(policy, {"tools": 5}, None) == {"tools": []}
    # With no policy every tool is visible.
    everything = filter_tools_list(load_policy(None), result, None)
    assert [t["name"] for t in everything["tools"]] == ["read_file", "deploy", "drop_db", "unknown"]


def test_policy_pickles_as_its_source(policy: Policy) -> None:
    clone = pickle.loads(pickle.dumps(policy))  # noqa: S301 -- our own bytes
    assert clone.hash == policy.hash
    assert evaluate(clone, tool_call("read_file", {"path": "/etc/x"}), 0).verdict == "deny"
    assert pickle.loads(pickle.dumps(load_policy(None))).safe_mode_only  # noqa: S301
