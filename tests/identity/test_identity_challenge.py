from __future__ import annotations

import re

import pytest
from oidc_testkit import AUDIENCE, claims, rsa_key, sign

from agentwall.errors import (
    FORBIDDEN,
    IDENTITY_UNAVAILABLE,
    UNAUTHENTICATED,
    AuthRequestInvalid,
    TokenMissing,
)
from agentwall.identity import (
    AuthChallenge,
    TokenVerifier,
    authenticate,
    bearer_token,
    coerce_identity_config,
    metadata_url,
    protected_resource_metadata,
    resource_url,
)
from agentwall.identity.challenge import challenge_for_category, metadata_path_resource
from agentwall.identity.rules import CATEGORY_IDENTITY_SCOPE, CATEGORY_IDENTITY_SUBJECT
from agentwall.types import Identity

ISSUER = "https://auth.example.test"
NOW = 1_800_000_000.0
KEY = rsa_key("k1")
PRM = "https://proxy.example/.well-known/oauth-protected-resource/mcp"
CONFIG = coerce_identity_config(
    {"issuer": ISSUER, "audience": AUDIENCE, "scopes_supported": ["tools:read"]}
)


@pytest.fixture
def verifier() -> TokenVerifier:
    v = TokenVerifier(CONFIG)
    v.load_jwks({"keys": [KEY.public_jwk]}, NOW)
    return v


def _params(header: str) -> dict[str, str]:
    assert header.startswith("Bearer")
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def test_valid_header(verifier: TokenVerifier) -> None:
    tok = sign(KEY, claims(ISSUER, NOW))
    result = authenticate(verifier, f"Bearer {tok}", NOW, resource_metadata=PRM)
    assert isinstance(result, Identity)
    assert authenticate(verifier, [f"bearer  {tok}".encode()], NOW, resource_metadata=PRM) == result


def test_missing_token_is_bare_401(verifier: TokenVerifier) -> None:
    for header in (None, "", [], "Basic dXNlcjpwYXNz"):
        result = authenticate(verifier, header, NOW, resource_metadata=PRM)
        assert isinstance(result, AuthChallenge)
        assert result.status == 401
        assert result.rpc_code == UNAUTHENTICATED
        assert result.www_authenticate is not None
        params = _params(result.www_authenticate)
        assert params == {"resource_metadata": PRM}  # no error code (RFC 6750 3.1)


def test_invalid_token_is_401_invalid_token(verifier: TokenVerifier) -> None:
    expired = sign(KEY, claims(ISSUER, NOW, exp=int(NOW) - 3600))
    result = authenticate(verifier, f"Bearer {expired}", NOW, resource_metadata=PRM)
    assert isinstance(result, AuthChallenge)
    assert result.status == 401
    assert result.reason == "expired"
    assert result.www_authenticate is not None
    params = _params(result.www_authenticate)
    assert params["error"] == "invalid_token"
    assert params["resource_metadata"] == PRM
    assert "expired" in params["error_description"]


@pytest.mark.parametrize(
    "header",
    [
        ["Bearer a.b.c", "Bearer d.e.f"],
        "Bearer ",
        "Bearer a b",
        'Bearer a"b.c.d',
        "Bearer " + "a" * 20000,
    ],
)
def test_malformed_requests_are_400(verifier: TokenVerifier, header: object) -> None:
    result = authenticate(verifier, header, NOW, resource_metadata=PRM)  # type: ignore[arg-type]
    assert isinstance(result, AuthChallenge)
    assert result.status == 400
    assert result.www_authenticate is not None
    assert 'error="invalid_request"' in result.www_authenticate


def test_bearer_token_errors() -> None:
    with pytest.raises(TokenMissing):
        bearer_token(None)
    with pytest.raises(AuthRequestInvalid):
        bearer_token(["Bearer x", "Bearer y"])
    assert bearer_token("Bearer abc.def-_~+/=") == b"abc.def-_~+/="


def test_keys_unavailable_is_503_without_challenge() -> None:
    unloaded = TokenVerifier(CONFIG)
    tok = sign(KEY, claims(ISSUER, NOW))
    result = authenticate(unloaded, f"Bearer {tok}", NOW, resource_metadata=PRM)
    assert isinstance(result, AuthChallenge)
    assert (result.status, result.www_authenticate, result.rpc_code) == (
        503,
        None,
        IDENTITY_UNAVAILABLE,
    )


def test_insufficient_scope_challenge_lists_all_required_scopes() -> None:
    challenge = challenge_for_category(
        CATEGORY_IDENTITY_SCOPE,
        "missing scope(s): deploy:approve",
        ["deploy:write", "deploy:approve"],
        PRM,
    )
    assert challenge is not None
    assert challenge.status == 403
    assert challenge.rpc_code == FORBIDDEN
    assert challenge.www_authenticate is not None
    params = _params(challenge.www_authenticate)
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == "deploy:write deploy:approve"
    assert params["resource_metadata"] == PRM
    assert challenge_for_category(CATEGORY_IDENTITY_SUBJECT, "x", [], PRM) is None
    assert challenge_for_category(None, "x", [], PRM) is None


def test_description_cannot_break_the_header() -> None:
    from agentwall.errors import TokenInvalid

    value = TokenInvalid('bad "quoted"\r\nInjected: yes \\ end').www_authenticate(PRM)
    assert "\r" not in value
    assert "\n" not in value
    assert _params(value)["error_description"] == "bad quotedInjected: yes  end"


def test_metadata_document_and_urls() -> None:
    resource = resource_url(
        CONFIG, scheme="https", host="proxy.example", path="/mcp", fallback_host="x"
    )
    assert resource == "https://proxy.example/mcp"
    assert metadata_url(resource) == PRM
    assert (
        metadata_url("https://proxy.example")
        == "https://proxy.example/.well-known/oauth-protected-resource"
    )
    assert (
        metadata_url("https://proxy.example/")
        == "https://proxy.example/.well-known/oauth-protected-resource"
    )
    doc = protected_resource_metadata(CONFIG, resource)
    assert doc == {
        "resource": "https://proxy.example/mcp",
        "authorization_servers": [ISSUER],
        "bearer_methods_supported": ["header"],
        "resource_name": "AgentWall MCP proxy",
        "scopes_supported": ["tools:read"],
    }


def test_hostile_host_header_is_not_echoed() -> None:
    for host in ('evil"host', "a b", "x\r\nSet-Cookie: 1", ""):
        url = resource_url(
            CONFIG, scheme="http", host=host, path="/", fallback_host="127.0.0.1:8080"
        )
        assert url == "http://127.0.0.1:8080"
    assert (
        resource_url(CONFIG, scheme="http", host=b"[::1]:8080", path="/", fallback_host="x")
        == "http://[::1]:8080"
    )
    fixed = coerce_identity_config(
        {"issuer": ISSUER, "audience": AUDIENCE, "resource": "https://mcp.corp/mcp"}
    )
    assert (
        resource_url(fixed, scheme="http", host="whatever", path="/", fallback_host="x")
        == "https://mcp.corp/mcp"
    )


def test_metadata_paths() -> None:
    paths = ("/mcp", "/")
    assert metadata_path_resource("/.well-known/oauth-protected-resource", paths) == "/"
    assert metadata_path_resource("/.well-known/oauth-protected-resource/mcp", paths) == "/mcp"
    assert metadata_path_resource("/.well-known/oauth-protected-resource/other", paths) is None
    assert metadata_path_resource("/mcp", paths) is None
