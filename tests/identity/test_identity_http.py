"""Identity through the real HTTP front-end: the official MCP SDK client (and
raw HTTP for the status codes) -> the AgentWall front-end with the identity
gate -> a real SDK MCP server subprocess that records every header it
receives.  Tokens come from a real issuer on 127.0.0.1; decisions and refusals
go to a real fsynced audit log."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from oidc_testkit import AUDIENCE, TestIssuer, ec_key, free_port, recording_upstream

from agentwall.audit.keys import AuditKey
from agentwall.audit.log import AuditLog, LocalAuditSink
from agentwall.errors import FORBIDDEN, POLICY_DENIED, UNAUTHENTICATED
from agentwall.identity import coerce_identity_config
from agentwall.io.http_front import FrontConfig, Proxy, serve
from agentwall.io.oidc import (
    CredentialedUpstreamPool,
    HttpIdentityGate,
    OidcAuthenticator,
    OidcSettings,
    UpstreamCredentials,
)
from agentwall.io.stdio_wrap import InProcessEvaluator
from agentwall.policy import filter_tools_list, loads_policy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

UPSTREAM_SECRET = "upstream-own-secret-7d1f"

POLICY = """
version: "2"
default_action: deny
identity:
  issuer: "{issuer}"
  audience: "{audience}"
  algorithms: [ES256]
tools:
  - name: whoami
    action: allow
  - name: deploy
    action: allow
    identity: {{claims: {{groups: [release]}}, scopes: ["deploy:write"]}}
  - name: read_file
    action: allow
    identity: {{subjects: [alice]}}
"""


@pytest.fixture(scope="module")
def issuer() -> Iterator[TestIssuer]:
    server = TestIssuer([ec_key("ec-1")]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    with recording_upstream(tmp_path_factory.mktemp("upstream")) as found:
        yield found


def _params(header: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


async def _sdk_calls(url: str, token: str) -> dict[str, Any]:
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.exceptions import MCPError

    out: dict[str, Any] = {}
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        out["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
        result = await session.call_tool("whoami", {})
        out["whoami"] = result.content[0].text  # type: ignore[union-attr]
        for name, args in (("deploy", {"env": "prod"}), ("read_file", {"path": "/a"})):
            try:
                done = await session.call_tool(name, args)
                out[name] = done.content[0].text  # type: ignore[union-attr]
            except MCPError as exc:
                out[name] = ("error", exc.code, exc.message)
        # The session keeps working after a denial.
        again = await session.call_tool("whoami", {})
        out["after_denial"] = again.content[0].text  # type: ignore[union-attr]
    return out


async def _raw(
    client: httpx2.AsyncClient, url: str, token: str | None, session: str | None = None, **body: Any
) -> httpx2.Response:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if session is not None:
        headers["Mcp-Session-Id"] = session
        headers["MCP-Protocol-Version"] = "2025-11-25"
    message = {"jsonrpc": "2.0", "id": 1, **body}
    return await client.post(url, headers=headers, content=json.dumps(message))


INIT = {
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"},
    },
}


def test_identity_through_the_front_end(
    issuer: TestIssuer, upstream: tuple[str, Path], tmp_path: Path
) -> None:
    upstream_url, record = upstream
    log_path = tmp_path / "audit.log"
    policy = loads_policy(POLICY.format(issuer=issuer.url, audience=AUDIENCE), source_path="p.yaml")
    assert policy.identity is not None
    alice = issuer.token(scope="deploy:write", groups=["release"])
    bob = issuer.token(sub="bob", scope="tools:read", groups=["dev"])

    async def scenario() -> dict[str, Any]:
        auth = OidcAuthenticator(
            coerce_identity_config(policy.identity),
            OidcSettings(),
            class_claims=sorted(policy.identity_claims_used),
        )
        assert await auth.start()
        port = free_port()
        with AuditLog.open(log_path, AuditKey(os.urandom(32), source="test")) as log:
            sink = LocalAuditSink(log)
            pool = CredentialedUpstreamPool(
                upstream_url,
                credentials=UpstreamCredentials([f"X-Upstream-Key: {UPSTREAM_SECRET}"]),
            )
            gate = HttpIdentityGate(auth, listen=f"127.0.0.1:{port}", audit=sink)
            evaluator = InProcessEvaluator(policy)
            proxy = Proxy(
                FrontConfig(),
                evaluator=evaluator,
                audit=sink,
                upstream=pool,
                policy=policy,
                tools_filter=filter_tools_list,
                authenticator=gate,
            )
            server = await serve(proxy, "127.0.0.1", port)
            url = f"http://127.0.0.1:{port}/mcp"
            out: dict[str, Any] = {}
            try:
                out["alice"] = await _sdk_calls(url, alice)
                out["bob"] = await _sdk_calls(url, bob)
                async with httpx2.AsyncClient(timeout=30) as raw:
                    out["no_token"] = await _raw(raw, url, None, **INIT)
                    out["bad_token"] = await _raw(raw, url, "abc.def.ghi", **INIT)
                    out["two_tokens"] = await raw.post(
                        url,
                        headers=[
                            ("Accept", "application/json, text/event-stream"),
                            ("Content-Type", "application/json"),
                            ("Authorization", f"Bearer {alice}"),
                            ("Authorization", f"Bearer {bob}"),
                        ],
                        content=json.dumps({"jsonrpc": "2.0", "id": 1, **INIT}),
                    )
                    out["prm"] = await raw.get(
                        f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource"
                    )
                    opened = await _raw(raw, url, alice, **INIT)
                    out["opened"] = opened
                    sid = opened.headers["mcp-session-id"]
                    out["hijack"] = await _raw(
                        raw, url, bob, sid, method="tools/call",
                        params={"name": "whoami", "arguments": {}},
                    )  # fmt: skip
                    out["owner"] = await _raw(
                        raw, url, alice, sid, method="tools/call",
                        params={"name": "whoami", "arguments": {}},
                    )  # fmt: skip
                    out["step_up"] = await _raw(
                        raw, url, bob, None, method="tools/call",
                        params={"name": "deploy", "arguments": {"env": "prod"}},
                    )  # fmt: skip
            finally:
                server.close()
                await server.wait_closed()
                await pool.close()
                evaluator.close()
                await auth.aclose()
        return out

    out = asyncio.run(scenario())

    # The SDK client, as alice: everything allowed, the upstream answers.
    a = out["alice"]
    assert a["tools"] == ["deploy", "read_file", "whoami"]
    assert a["whoami"] == "upstream sees the proxy"
    assert a["deploy"] == "deployed to prod"
    assert a["read_file"] == "contents of /a"

    # As bob: the tools/list is filtered; deploy lacks scope and group (403
    # insufficient_scope, surfaced as its JSON-RPC error); read_file is
    # alice's only (an ordinary denial); the session survives.
    b = out["bob"]
    assert b["tools"] == ["whoami"]
    assert b["deploy"][:2] == ("error", FORBIDDEN)
    assert b["read_file"][:2] == ("error", POLICY_DENIED)
    assert b["after_denial"] == "upstream sees the proxy"

    # Raw HTTP: the exact statuses and challenges.
    base = out["prm"].url.scheme + "://" + out["prm"].url.netloc.decode()
    prm_url = base + "/.well-known/oauth-protected-resource"
    no_token = out["no_token"]
    assert no_token.status_code == 401
    assert _params(no_token.headers["www-authenticate"]) == {"resource_metadata": prm_url}
    assert no_token.json()["error"]["code"] == UNAUTHENTICATED
    bad = out["bad_token"]
    assert bad.status_code == 401
    assert _params(bad.headers["www-authenticate"])["error"] == "invalid_token"
    assert out["two_tokens"].status_code == 400  # RFC 6750: one set of credentials
    prm = out["prm"]
    assert prm.status_code == 200
    assert prm.json()["authorization_servers"] == [issuer.url]
    assert prm.json()["resource"] == base

    assert out["opened"].status_code == 200
    hijack = out["hijack"]
    assert hijack.status_code == 403
    assert hijack.json()["error"]["code"] == FORBIDDEN
    assert "another subject" in hijack.json()["error"]["message"]
    assert out["owner"].status_code == 200
    assert out["owner"].json()["result"]["content"][0]["text"] == "upstream sees the proxy"

    step_up = out["step_up"]
    assert step_up.status_code == 403
    challenge = _params(step_up.headers["www-authenticate"])
    assert challenge["error"] == "insufficient_scope"
    assert challenge["scope"] == "deploy:write"
    assert challenge["resource_metadata"] == prm_url
    assert step_up.json()["error"]["code"] == FORBIDDEN

    # What the upstream received: never a client token or any Authorization,
    # always the proxy's own credential.
    requests = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(requests) >= 8
    for request in requests:
        names = {name.lower() for name, _ in request["headers"]}
        assert "authorization" not in names
        assert ["x-upstream-key", UPSTREAM_SECRET] in request["headers"]
    raw_record = record.read_text()
    for token in (alice, bob):
        assert token not in raw_record
        assert token.split(".")[2] not in raw_record  # not even the signature

    # The audit log: every decision carries subject and issuer; refusals too.
    rows = [orjson.loads(line) for line in log_path.read_bytes().splitlines()]
    decisions = [r for r in rows if r.get("event") == "decision" and r.get("method")]
    calls = [r for r in decisions if r.get("method") == "tools/call"]
    assert calls
    assert all(r["issuer"] == issuer.url and r["subject"] in ("alice", "bob") for r in calls)
    denied = {(r["subject"], r["target"]): r for r in calls if r["decision"] == "deny"}
    assert denied[("bob", "deploy")]["rule_id"] == "tools[deploy].identity"
    assert denied[("bob", "read_file")]["rule_id"] == "tools[read_file].identity"
    refusals = [r for r in rows if r.get("rule_id") == "identity.authentication"]
    assert [r["reason"].split(":")[0] for r in refusals] == [
        "401 missing",
        "401 malformed",
        "403 session_subject_mismatch",
    ]
    assert refusals[-1]["subject"] == "bob"
    raw_log = log_path.read_bytes()
    assert alice.encode() not in raw_log
    assert bob.encode() not in raw_log
