"""The policy's ``identity:`` section: audience lists, ``scope_implies``,
``resource`` and ``scopes_supported`` load strictly (file:line:column), and
what the loader produces is what the identity layer accepts and acts on."""

from __future__ import annotations

import textwrap

import pytest

from agentwall.errors import PolicyError
from agentwall.identity.challenge import protected_resource_metadata, resource_url
from agentwall.identity.claims import token_scopes
from agentwall.identity.config import coerce_identity_config
from agentwall.policy import loads_policy

HEAD = 'version: "2"\ndefault_action: deny\n'
PREFIX = "identity: {issuer: 'https://a.example', "

FULL = HEAD + textwrap.dedent("""\
    identity:
      issuer: "https://auth.example.com"
      audience: ["agentwall-proxy", "https://mcp.example.com/mcp"]
      scope_implies:
        admin: ["deploy:write", "tools:read"]
        "deploy:write": ["deploy:read"]
      resource: "https://mcp.example.com/mcp"
      scopes_supported: ["tools:read", "deploy:read", "deploy:write", "admin"]
    """)


def _error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        loads_policy(text, source_path="p.yaml")
    return info.value


def test_full_section_loads_into_the_model() -> None:
    ident = loads_policy(FULL).identity
    assert ident is not None
    assert ident.audience == ("agentwall-proxy", "https://mcp.example.com/mcp")
    assert ident.scope_implies == {
        "admin": ("deploy:write", "tools:read"),
        "deploy:write": ("deploy:read",),
    }
    assert ident.resource == "https://mcp.example.com/mcp"
    assert ident.scopes_supported == ("tools:read", "deploy:read", "deploy:write", "admin")


def test_identity_layer_accepts_and_uses_what_the_loader_produces() -> None:
    policy = loads_policy(FULL)
    config = coerce_identity_config(policy.identity)
    assert config.audience == ("agentwall-proxy", "https://mcp.example.com/mcp")
    assert config.resource == "https://mcp.example.com/mcp"
    assert config.scopes_supported == ("tools:read", "deploy:read", "deploy:write", "admin")
    # The hierarchy is expanded transitively by the verifier's scope reader.
    assert token_scopes({"scope": "admin"}, config.scope_implies) == (
        "admin",
        "deploy:read",
        "deploy:write",
        "tools:read",
    )
    assert token_scopes({"scope": "deploy:write"}, config.scope_implies) == (
        "deploy:read",
        "deploy:write",
    )
    # RFC 9728: the configured resource wins over the request's Host, and the
    # metadata document advertises the supported scopes.
    url = resource_url(
        config, scheme="http", host="127.0.0.1:9", path="/mcp", fallback_host="127.0.0.1:9"
    )
    assert url == "https://mcp.example.com/mcp"
    doc = protected_resource_metadata(config, url)
    assert doc["scopes_supported"] == ["tools:read", "deploy:read", "deploy:write", "admin"]


def test_defaults_when_absent_match_the_identity_layer_defaults() -> None:
    policy = loads_policy(HEAD + "identity: {issuer: 'https://a.example', audience: b}\n")
    assert policy.identity is not None
    assert policy.identity.audience == "b"
    config = coerce_identity_config(policy.identity)
    assert (config.audience, config.scope_implies, config.resource, config.scopes_supported) == (
        ("b",),
        {},
        None,
        (),
    )


def test_one_item_audience_list_is_the_plain_string() -> None:
    one = loads_policy(HEAD + "identity: {issuer: 'https://a.example', audience: [b]}\n")
    plain = loads_policy(HEAD + "identity: {issuer: 'https://a.example', audience: b}\n")
    assert one.identity == plain.identity
    assert one.hash == plain.hash


def test_each_new_key_changes_the_hash() -> None:
    base = HEAD + "identity: {issuer: 'https://a.example', %s}\n"
    variants = (
        "audience: b",
        "audience: [b, c]",
        "audience: b, scope_implies: {admin: [read]}",
        "audience: b, scope_implies: {admin: [write]}",
        "audience: b, resource: 'https://m.example/mcp'",
        "audience: b, scopes_supported: [read]",
    )
    assert len({loads_policy(base % v).hash for v in variants}) == len(variants)


@pytest.mark.parametrize(
    ("entry", "at", "needle"),
    [
        ("audience: []", "[]", "must not be empty"),
        ("audience: [b, b]", "b]", "twice"),
        ("audience: [b, 7]", "7]", "must be a string"),
        ("audience: {b: 1}", "{b", "single value"),
        ("audience: b, scope_implies: [admin]", "[admin]", "mapping of scope"),
        ("audience: b, scope_implies: {admin: read}", "read}", "must be a list"),
        ("audience: b, scope_implies: {admin: []}", "[]", "must not be empty"),
        ("audience: b, scope_implies: {admin: [read, read]}", "read]", "twice"),
        ("audience: b, scope_implies: {admin: ['a b']}", "'a b'", "not a scope token"),
        ("audience: b, scope_implies: {'a\"b': [read]}", "'a", "not a scope token"),
        ("audience: b, scope_implies: {admin: [1]}", "1]", "must be a string"),
        ("audience: b, resource: mcp.example.com", "mcp.", "absolute http(s) URL"),
        ("audience: b, resource: 'https://m.example/mcp#x'", "'https://m", "without a fragment"),
        ("audience: b, resource: [x]", "[x]", "single value"),
        ("audience: b, scopes_supported: read", "read", "must be a list"),
        ("audience: b, scopes_supported: ['a\\b']", "'a", "not a scope token"),
        ("audience: b, scopes_supported: [read, read]", "read]", "twice"),
    ],
)
def test_rejections_have_positions(entry: str, at: str, needle: str) -> None:
    line = PREFIX + entry + "}"
    err = _error(HEAD + line + "\n")
    assert err.path == "p.yaml"
    assert needle in str(err), str(err)
    # The error points at the offending value on line 3 (after the two head lines).
    assert (err.line, err.column) == (3, line.index(at, len(PREFIX)) + 1), str(err)


def test_misspelt_new_keys_get_a_suggestion() -> None:
    err = _error(HEAD + PREFIX + "audience: b, scope_implied: {a: [b]}}\n")
    assert err.key == "scope_implied"
    assert err.suggestion == "scope_implies"
    err = _error(HEAD + PREFIX + "audience: b, scope_supported: [a]}\n")
    assert err.suggestion == "scopes_supported"
