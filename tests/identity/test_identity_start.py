"""A real ``agentwall start`` subprocess (audit writer process, workers)
with identity on: the official SDK client presents a Bearer token from a real
issuer on 127.0.0.1 (the policy names a different issuer; ``--oidc-issuer``
overrides it), the upstream is a real SDK server that records headers, and
``--upstream-header`` gives the proxy its own upstream credential."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from oidc_testkit import (
    AUDIENCE,
    TestIssuer,
    ec_key,
    free_port,
    recording_upstream,
    rsa_key,
    stop_process,
    wait_http,
)

from agentwall.audit.keys import read_key_file
from agentwall.audit.verify import verify_files
from agentwall.errors import FORBIDDEN

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

POLICY = """
version: "2"
default_action: deny
identity:
  issuer: "https://issuer.invalid"
  audience: "{audience}"
  algorithms: [ES256, RS256]
tools:
  - name: whoami
    action: allow
  - name: deploy
    action: allow
    identity: {{scopes: ["deploy:write"]}}
"""


@pytest.fixture(scope="module")
def issuer() -> Iterator[TestIssuer]:
    server = TestIssuer([ec_key("ec-1")]).start()
    yield server
    server.stop()


async def _session(url: str, token: str) -> dict[str, Any]:
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
        out["whoami"] = (await session.call_tool("whoami", {})).content[0].text  # type: ignore[union-attr]
        try:
            await session.call_tool("deploy", {"env": "prod"})
            out["deploy"] = "allowed"
        except MCPError as exc:
            out["deploy"] = exc.code
    return out


def test_agentwall_start_with_identity(issuer: TestIssuer, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(audience=AUDIENCE))
    key = tmp_path / "audit.key"
    key.write_text("ef" * 32 + "\n")
    key.chmod(0o600)
    log_path = tmp_path / "audit.log"
    port = free_port()
    proxy = f"http://127.0.0.1:{port}"
    with recording_upstream(tmp_path) as (upstream_url, record):
        argv = [
            sys.executable, "-m", "agentwall", "start",
            "--listen", f"127.0.0.1:{port}", "--mcp-url", upstream_url,
            "--policy", str(policy), "--log-path", str(log_path),
            "--audit-key-file", str(key), "--workers", "1",
            "--oidc-issuer", issuer.url,
            "--upstream-header", "X-Upstream-Key: proxy-own-key",
        ]  # fmt: skip
        out_path = tmp_path / "start.out"
        with out_path.open("wb") as sink:
            proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
        try:
            wait_http(f"{proxy}/healthz", proc, out_path)
            ready = httpx2.get(f"{proxy}/readyz", timeout=10)
            no_token = httpx2.post(
                f"{proxy}/mcp",
                headers={"Accept": "application/json, text/event-stream"},
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                timeout=10,
            )
            prm = httpx2.get(f"{proxy}/.well-known/oauth-protected-resource", timeout=10)
            alice = issuer.token(scope="deploy:write")
            bob = issuer.token(sub="bob", scope="tools:read")
            a = anyio.run(_session, f"{proxy}/mcp", alice)
            b = anyio.run(_session, f"{proxy}/mcp", bob)
            # A new signing key, published mid-run: the first token signed
            # with it buys one refresh, then verifies.
            rotated = rsa_key("rsa-2")
            issuer.set_keys([*issuer.keys, rotated])
            c = anyio.run(_session, f"{proxy}/mcp", issuer.token(rotated, sub="carol"))
            metrics = httpx2.get(f"{proxy}/metrics", timeout=10).text
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            finally:
                stop_process(proc)

    assert proc.returncode == 0, out_path.read_text()
    assert ready.status_code == 200
    assert ready.json()["checks"]["identity_keys"] is True
    assert no_token.status_code == 401
    assert "resource_metadata=" in no_token.headers["www-authenticate"]
    assert prm.json()["authorization_servers"] == [issuer.url]

    assert a == {"tools": ["deploy", "whoami"], "whoami": "upstream sees the proxy",
                 "deploy": "allowed"}  # fmt: skip
    assert b == {"tools": ["whoami"], "whoami": "upstream sees the proxy", "deploy": FORBIDDEN}
    assert c["whoami"] == "upstream sees the proxy"
    counters = dict(
        line.split(" ", 1) for line in metrics.splitlines() if line.startswith("agentwall_identity")
    )
    assert int(counters["agentwall_identity_token_cache_hits_total"]) > 0
    assert int(counters["agentwall_identity_unknown_kid_refreshes_total"]) == 1
    assert int(counters["agentwall_identity_refusals_total"]) == 1  # the no-token request
    assert counters["agentwall_identity_keys"] == "2"

    requests = [json.loads(line) for line in record.read_text().splitlines()]
    assert requests
    for request in requests:
        names = [name.lower() for name, _ in request["headers"]]
        assert "authorization" not in names
        assert ["x-upstream-key", "proxy-own-key"] in request["headers"]

    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    start = next(r for r in rows if r["event"] == "proxy_start")
    assert start["detail"]["identity"]["issuer"] == issuer.url
    calls = [r for r in rows if r.get("method") == "tools/call"]
    assert {(r["subject"], r["target"], r["decision"]) for r in calls} == {
        ("alice", "whoami", "allow"),
        ("alice", "deploy", "allow"),
        ("bob", "whoami", "allow"),
        ("bob", "deploy", "deny"),
        ("carol", "whoami", "allow"),
        ("carol", "deploy", "allow"),  # the default test scope has deploy:write
    }
    assert all(r["issuer"] == issuer.url for r in calls)
    assert verify_files([log_path], [read_key_file(key)]).valid
    assert issuer.jwks_hits() >= 2  # start-up, then the rotated key's refresh
    assert os.environ.get("AGENTWALL_IDENTITY_TOKEN") is None


def test_oidc_issuer_without_identity_section_is_refused(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text('version: "2"\ndefault_action: deny\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentwall",
            "start",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--policy",
            str(policy),
            "--log-path",
            str(tmp_path / "a.log"),
            "--oidc-issuer",
            "https://issuer.example",
        ],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert b"needs an identity: section" in proc.stderr


def test_bad_upstream_header_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentwall",
            "start",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--log-path",
            str(tmp_path / "a.log"),
            "--upstream-header",
            "Host: evil.example",
        ],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert b"set by the proxy itself" in proc.stderr


def test_sighup_reload_applies_the_new_identity_section(issuer: TestIssuer, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        POLICY.format(audience=AUDIENCE).replace("https://issuer.invalid", issuer.url)
    )
    port = free_port()
    proxy = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "audit.log"
    headers = {"Accept": "application/json, text/event-stream"}
    ping = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "probe", "version": "1"},
        },
    }
    with recording_upstream(tmp_path) as (upstream_url, _record):
        argv = [
            sys.executable, "-m", "agentwall", "start",
            "--listen", f"127.0.0.1:{port}", "--mcp-url", upstream_url,
            "--policy", str(policy), "--log-path", str(log_path), "--workers", "0",
        ]  # fmt: skip
        out_path = tmp_path / "start.out"
        with out_path.open("wb") as sink:
            proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
        try:
            wait_http(f"{proxy}/healthz", proc, out_path)
            token = issuer.token()
            before = httpx2.post(
                f"{proxy}/mcp",
                headers={**headers, "Authorization": f"Bearer {token}"},
                json=ping,
                timeout=10,
            )
            policy.write_text(policy.read_text().replace(AUDIENCE, "another-audience"))
            proc.send_signal(signal.SIGHUP)
            after = before
            for _ in range(200):  # bounded: the reload is asynchronous
                after = httpx2.post(
                    f"{proxy}/mcp",
                    headers={**headers, "Authorization": f"Bearer {token}"},
                    json=ping,
                    timeout=10,
                )
                if after.status_code == 401:
                    break
                anyio.run(anyio.sleep, 0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            finally:
                stop_process(proc)
    assert before.status_code == 200, before.text
    assert after.status_code == 401
    assert 'error="invalid_token"' in after.headers["www-authenticate"]
    assert "audience" in after.json()["error"]["message"]
