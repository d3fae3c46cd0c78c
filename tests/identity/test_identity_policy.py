"""Per-tool identity rules end to end: a real issuer on 127.0.0.1, tokens
verified by the OIDC shell, the resulting Identity in a Call judged by the
policy's own ``evaluate``, and the HTTP answer derived from the decision
(``challenge_for_decision``)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest
from oidc_testkit import AUDIENCE, TestIssuer, ec_key

from agentwall.core.canonical import canonical_json
from agentwall.identity import coerce_identity_config
from agentwall.identity.challenge import challenge_for_decision
from agentwall.identity.rules import (
    CATEGORY_IDENTITY_CLAIMS,
    CATEGORY_IDENTITY_REQUIRED,
    CATEGORY_IDENTITY_SCOPE,
    CATEGORY_IDENTITY_SUBJECT,
)
from agentwall.io.oidc import OidcAuthenticator, OidcSettings
from agentwall.policy import Policy, evaluate, filter_tools_list, loads_policy
from agentwall.types import Call, Decision, Identity

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PRM = "http://127.0.0.1:1/.well-known/oauth-protected-resource"

POLICY = """
version: "2"
default_action: deny
identity:
  issuer: "{issuer}"
  audience: "{audience}"
  algorithms: [ES256]
  required_claims: {{tenant: [acme]}}
  clock_skew_seconds: 5
tools:
  - name: read_file
    action: allow
  - name: deploy
    action: allow
    identity:
      subjects: [alice, bob]
      claims: {{groups: [release]}}
      scopes: ["deploy:write", "deploy:approve"]
prompts:
  - name: release_notes
    action: allow
    identity: {{claims: {{groups: [release]}}}}
resources:
  - uri: "file:///srv/public/.*"
    action: allow
  - uri: "file:///srv/secret/.*"
    action: allow
    identity: {{scopes: ["secrets:read"]}}
"""


@pytest.fixture(scope="module")
def issuer() -> Iterator[TestIssuer]:
    server = TestIssuer([ec_key("ec-1")]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def policy(issuer: TestIssuer) -> Policy:
    return loads_policy(POLICY.format(issuer=issuer.url, audience=AUDIENCE), source_path="t.yaml")


def identities(issuer: TestIssuer, policy: Policy, tokens: dict[str, str]) -> dict[str, Any]:
    async def scenario() -> dict[str, Any]:
        assert policy.identity is not None
        auth = OidcAuthenticator(
            coerce_identity_config(policy.identity),
            OidcSettings(),
            class_claims=sorted(policy.identity_claims_used),
        )
        assert await auth.start(background=False)
        out = {}
        for name, token in tokens.items():
            out[name] = await auth.authenticate(f"Bearer {token}", resource_metadata=PRM)
        await auth.aclose()
        return out

    return asyncio.run(scenario())


def call(method: str, params: dict[str, Any], identity: Identity | None, target: str) -> Call:
    return Call(
        call_id="c1", session="s1", transport="http", origin="client", kind="request",
        rpc_id=1, method=method, target=target, params=params,
        params_json=canonical_json(params), identity=identity,
    )  # fmt: skip


def tool(name: str, identity: Identity | None) -> Call:
    return call("tools/call", {"name": name, "arguments": {}}, identity, name)


def judge(policy: Policy, c: Call) -> tuple[Decision, Any]:
    decision = evaluate(policy, c, 0)
    return decision, challenge_for_decision(decision, PRM)


def _scope_param(header: str | None) -> str:
    assert header is not None
    found = re.search(r'scope="([^"]*)"', header)
    assert found is not None
    return found.group(1)


def test_per_tool_claims_scopes_and_subjects(issuer: TestIssuer, policy: Policy) -> None:
    full = "deploy:write deploy:approve"
    who = identities(
        issuer,
        policy,
        {
            "alice": issuer.token(scope=full, tenant="acme"),
            "carol": issuer.token(sub="carol", scope=full, tenant="acme"),
            "alice_no_scope": issuer.token(scope="deploy:write", tenant="acme"),
            "alice_dev": issuer.token(scope=full, tenant="acme", groups=["dev"]),
            "other_tenant": issuer.token(scope=full, tenant="globex"),
        },
    )
    alice = who["alice"]
    assert isinstance(alice, Identity)
    # The claims class covers what rules look at (groups), not the rest.
    assert set(alice.claims) == {"groups"}

    decision, challenge = judge(policy, tool("deploy", alice))
    assert decision.verdict == "allow"
    assert challenge is None
    assert judge(policy, tool("read_file", alice))[0].verdict == "allow"

    decision, challenge = judge(policy, tool("deploy", who["carol"]))
    assert decision.verdict == "deny"
    assert decision.category == CATEGORY_IDENTITY_SUBJECT
    assert challenge is None  # a plain JSON-RPC error: another token would not help

    decision, challenge = judge(policy, tool("deploy", who["alice_no_scope"]))
    assert decision.verdict == "deny"
    assert decision.rule_id == "tools[deploy].identity"
    assert decision.category == CATEGORY_IDENTITY_SCOPE
    assert challenge is not None
    assert challenge.status == 403
    assert 'error="insufficient_scope"' in (challenge.www_authenticate or "")
    assert f'resource_metadata="{PRM}"' in (challenge.www_authenticate or "")
    # Every scope the call needs, in one challenge (MCP 2026-07-28).
    assert _scope_param(challenge.www_authenticate) == full

    decision, challenge = judge(policy, tool("deploy", who["alice_dev"]))
    assert decision.verdict == "deny"
    assert decision.category == CATEGORY_IDENTITY_CLAIMS
    assert challenge is not None
    assert challenge.status == 403
    assert _scope_param(challenge.www_authenticate) == full

    # Policy-level required_claims: a valid token for another tenant is 403
    # at authentication, before any rule is looked at.
    refused = who["other_tenant"]
    assert not isinstance(refused, Identity)
    assert refused.status == 403
    assert refused.reason == "required_claims"
    assert 'error="insufficient_scope"' in (refused.www_authenticate or "")

    decision, challenge = judge(policy, tool("deploy", None))
    assert decision.verdict == "deny"
    assert decision.category == CATEGORY_IDENTITY_REQUIRED
    assert challenge is None


def test_prompts_resources_and_tools_list(issuer: TestIssuer, policy: Policy) -> None:
    who = identities(
        issuer,
        policy,
        {
            "releaser": issuer.token(scope="deploy:write deploy:approve", tenant="acme"),
            "reader": issuer.token(sub="bob", scope="secrets:read", tenant="acme", groups=["dev"]),
        },
    )
    releaser, reader = who["releaser"], who["reader"]
    notes = call("prompts/get", {"name": "release_notes"}, releaser, "release_notes")
    assert judge(policy, notes)[0].verdict == "allow"
    notes_reader = call("prompts/get", {"name": "release_notes"}, reader, "release_notes")
    decision, challenge = judge(policy, notes_reader)
    assert decision.verdict == "deny"
    assert decision.category == CATEGORY_IDENTITY_CLAIMS
    assert challenge is not None
    assert challenge.status == 403

    uri = "file:///srv/secret/keys.txt"
    secret = call("resources/read", {"uri": uri}, reader, uri)
    assert judge(policy, secret)[0].verdict == "allow"
    secret_releaser = call("resources/read", {"uri": uri}, releaser, uri)
    decision, challenge = judge(policy, secret_releaser)
    assert decision.verdict == "deny"
    assert decision.category == CATEGORY_IDENTITY_SCOPE
    assert decision.required_scopes == ("secrets:read",)
    assert challenge is not None
    assert _scope_param(challenge.www_authenticate) == "secrets:read"

    listing = {"tools": [{"name": "read_file"}, {"name": "deploy"}]}
    assert [t["name"] for t in filter_tools_list(policy, listing, releaser)["tools"]] == [
        "read_file",
        "deploy",
    ]
    assert [t["name"] for t in filter_tools_list(policy, listing, reader)["tools"]] == ["read_file"]
