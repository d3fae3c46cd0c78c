from __future__ import annotations

import pytest

from agentwall.errors import ConfigError
from agentwall.identity import IdentityRule, check_identity_rule, parse_identity_rule
from agentwall.identity.rules import (
    CATEGORY_IDENTITY_CLAIMS,
    CATEGORY_IDENTITY_REQUIRED,
    CATEGORY_IDENTITY_SCOPE,
    CATEGORY_IDENTITY_SUBJECT,
    claims_looked_at,
)
from agentwall.types import Identity

ALICE = Identity(
    subject="alice",
    issuer="https://auth",
    scopes=("deploy:write", "tools:read"),
    claims={"groups": ["release", "dev"], "tenant": "acme", "email_verified": True, "level": 3},
)
DEPLOY = parse_identity_rule(
    {"subjects": ["alice", "bob"], "claims": {"groups": ["release"]}, "scopes": ["deploy:write"]}
)


def test_satisfied() -> None:
    assert check_identity_rule(DEPLOY, ALICE) is None


def test_anonymous_refused() -> None:
    refusal = check_identity_rule(DEPLOY, None)
    assert refusal is not None
    assert refusal.category == CATEGORY_IDENTITY_REQUIRED


def test_wrong_subject() -> None:
    mallory = Identity(
        subject="mallory", issuer="https://auth", scopes=ALICE.scopes, claims=ALICE.claims
    )
    refusal = check_identity_rule(DEPLOY, mallory)
    assert refusal is not None
    assert refusal.category == CATEGORY_IDENTITY_SUBJECT
    assert "mallory" not in refusal.reason


def test_missing_scope_names_every_required_scope() -> None:
    rule = parse_identity_rule({"scopes": ["deploy:write", "deploy:approve"]})
    refusal = check_identity_rule(rule, ALICE)
    assert refusal is not None
    assert refusal.category == CATEGORY_IDENTITY_SCOPE
    assert refusal.required_scopes == ("deploy:write", "deploy:approve")
    assert "deploy:approve" in refusal.reason


@pytest.mark.parametrize(
    ("claims", "ok"),
    [
        ({"groups": ["release"]}, True),
        ({"groups": ["ops", "dev"]}, True),
        ({"groups": "release"}, True),
        ({"groups": ["ops"]}, False),
        ({"tenant": "acme"}, True),
        ({"tenant": ["other", "acme"]}, True),
        ({"tenant": "Acme"}, False),
        ({"email_verified": True}, True),
        ({"email_verified": 1}, False),
        ({"level": 3}, True),
        ({"level": "3"}, False),
        ({"missing": True}, False),
        ({"groups": ["release"], "tenant": "other"}, False),
    ],
)
def test_claims(claims: dict[str, object], ok: bool) -> None:
    refusal = check_identity_rule(parse_identity_rule({"claims": claims}), ALICE)
    assert (refusal is None) is ok
    if refusal is not None:
        assert refusal.category == CATEGORY_IDENTITY_CLAIMS


@pytest.mark.parametrize(
    "bad",
    [{}, {"subject": ["x"]}, {"scopes": "a b"}, {"scopes": [""]}, {"claims": {"g": []}}, ["x"]],
)
def test_parse_rejects(bad: object) -> None:
    with pytest.raises(ConfigError):
        parse_identity_rule(bad)


def test_claims_looked_at() -> None:
    rules = [DEPLOY, IdentityRule(claims={"tenant": "acme"})]
    assert claims_looked_at(rules) == (frozenset({"groups", "tenant"}), True)
    assert claims_looked_at([IdentityRule(scopes=("x",))]) == (frozenset(), False)
