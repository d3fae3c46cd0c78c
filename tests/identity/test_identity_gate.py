"""HttpIdentityGate (the HTTP front-end's authenticator hook) against a real
issuer on 127.0.0.1 and a real, fsynced audit log."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from oidc_testkit import AUDIENCE, TestIssuer, rsa_key

from agentwall.audit.keys import AuditKey
from agentwall.audit.log import AuditLog, LocalAuditSink
from agentwall.core.mcp_http import HttpReply, read_request_meta
from agentwall.errors import FORBIDDEN, IDENTITY_UNAVAILABLE, UNAUTHENTICATED
from agentwall.identity import coerce_identity_config
from agentwall.io.oidc import HttpIdentityGate, OidcAuthenticator, OidcSettings
from agentwall.types import Decision, Identity

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def issuer() -> Iterator[TestIssuer]:
    server = TestIssuer([rsa_key("rsa-1")]).start()
    yield server
    server.stop()


def meta(
    token: str | None = None, session: str | None = None, host: str = "proxy.test:8080"
) -> Any:
    headers = [(b"host", host.encode())]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if session is not None:
        headers.append((b"mcp-session-id", session.encode()))
    headers.append((b"mcp-method", b"tools/call"))
    return read_request_meta(headers)


def rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def challenge_params(reply: HttpReply) -> dict[str, str]:
    header = dict(reply.headers)[b"www-authenticate"].decode()
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def test_gate_end_to_end(issuer: TestIssuer, tmp_path: Path) -> None:
    log_path = tmp_path / "audit.log"

    async def scenario() -> dict[str, Any]:
        config = coerce_identity_config({"issuer": issuer.url, "audience": AUDIENCE})
        auth = OidcAuthenticator(config, OidcSettings())
        assert await auth.start(background=False)
        with AuditLog.open(log_path, AuditKey(os.urandom(32), source="test")) as log:
            gate = HttpIdentityGate(auth, listen="127.0.0.1:8080", audit=LocalAuditSink(log))
            alice, bob = issuer.token(), issuer.token(sub="bob")
            out = {
                "ok": await gate.authenticate(meta(alice), "127.0.0.1"),
                "missing": await gate.authenticate(meta(None), "127.0.0.1"),
                "expired": await gate.authenticate(meta(issuer.token(exp=1)), "127.0.0.1"),
                "session_alice": await gate.authenticate(meta(alice, "sess-1"), "127.0.0.1"),
                "session_bob": await gate.authenticate(meta(bob, "sess-1"), "127.0.0.1"),
                "session_alice_again": await gate.authenticate(meta(alice, "sess-1"), "127.0.0.1"),
            }
            gate.bind_session("sess-2", out["ok"])
            out["bound_bob"] = await gate.authenticate(meta(bob, "sess-2"), "127.0.0.1")
            gate.end_session("sess-2")
            out["after_end_bob"] = await gate.authenticate(meta(bob, "sess-2"), "127.0.0.1")
            out["prm_root"] = gate.serve(
                b"GET", b"/.well-known/oauth-protected-resource", b"proxy.test:8080"
            )
            out["prm_mcp"] = gate.serve(b"GET", b"/.well-known/oauth-protected-resource/mcp", None)
            out["prm_post"] = gate.serve(b"POST", b"/.well-known/oauth-protected-resource", None)
            out["other"] = gate.serve(b"GET", b"/mcp", None)
            scope_denial = Decision(
                call_id="c", verdict="deny", rule_id="tools[deploy].identity",
                reason="tool 'deploy': missing scope(s): deploy:write", pointer=None,
                policy_hash="x", category="identity_scope", cacheable=False,
                required_scopes=("deploy:write",),
            )  # fmt: skip
            out["scope"] = gate.challenge_for(scope_denial, "proxy.test:8080")
            issuer.stop()
            auth.verifier.jwks.max_age = 0  # keys expired, issuer down
            out["unavailable"] = await gate.authenticate(meta(alice), "127.0.0.1")
        await auth.aclose()
        return out

    out = asyncio.run(scenario())
    prm = "http://proxy.test:8080/.well-known/oauth-protected-resource"
    assert isinstance(out["ok"], Identity)
    missing = out["missing"]
    assert isinstance(missing, HttpReply)
    assert missing.status == 401
    assert challenge_params(missing) == {"resource_metadata": prm}
    assert json.loads(missing.body)["error"]["code"] == UNAUTHENTICATED
    expired = out["expired"]
    assert expired.status == 401
    assert challenge_params(expired)["error"] == "invalid_token"

    assert isinstance(out["session_alice"], Identity)
    hijack = out["session_bob"]
    assert isinstance(hijack, HttpReply)
    assert hijack.status == 403
    assert b"www-authenticate" not in dict(hijack.headers)
    assert json.loads(hijack.body)["error"]["code"] == FORBIDDEN
    assert isinstance(out["session_alice_again"], Identity)
    assert out["bound_bob"].status == 403
    assert isinstance(out["after_end_bob"], Identity)

    root = out["prm_root"]
    assert root.status == 200
    assert json.loads(root.body) == {
        "resource": "http://proxy.test:8080",
        "authorization_servers": [issuer.url],
        "bearer_methods_supported": ["header"],
        "resource_name": "AgentWall MCP proxy",
    }
    assert json.loads(out["prm_mcp"].body)["resource"] == "http://127.0.0.1:8080/mcp"
    assert out["prm_post"].status == 405
    assert out["other"] is None

    scope = out["scope"]
    assert scope.status == 403
    assert challenge_params(scope) == {
        "resource_metadata": prm,
        "error": "insufficient_scope",
        "error_description": "tool 'deploy': missing scope(s): deploy:write",
        "scope": "deploy:write",
    }
    unavailable = out["unavailable"]
    assert unavailable.status == 503
    assert json.loads(unavailable.body)["error"]["code"] == IDENTITY_UNAVAILABLE

    # Every refusal is in the audit log, with who (when known) and why, and
    # never the token.
    audited = rows(log_path)
    reasons = [r["reason"].split(":")[0] for r in audited]
    assert reasons == [
        "401 missing",
        "401 expired",
        "403 session_subject_mismatch",
        "403 session_subject_mismatch",
        "503 keys_unavailable",
    ]
    hijacks = [r for r in audited if "session" in r["reason"]]
    assert all(r["subject"] == "bob" and r["issuer"] == issuer.url for r in hijacks)
    assert all(
        r["decision"] == "deny" and r["rule_id"] == "identity.authentication" for r in audited
    )
    assert b"eyJ" not in log_path.read_bytes()
