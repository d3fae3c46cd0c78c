"""Identity through a real ``agentwall start``: a real OIDC issuer on 127.0.0.1
(discovery + JWKS, the identity part's test kit), real signed tokens, raw
HTTP from the agent's side, a scripted upstream that shows what it received."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_start_support import agentwall_start, stop

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "io"))
sys.path.insert(0, str(HERE.parents[1] / "identity"))
from oidc_testkit import AUDIENCE, TestIssuer, claims, rsa_key, sign  # noqa: E402
from test_http_front import (  # noqa: E402
    ScriptedUpstream,
    call,
    json_answer,
    port_of,
    post,
    raw,
    read_replies,
    rpc,
    scripted,
)

pytestmark = [pytest.mark.integration]

KEY = rsa_key("rsa-1")


def policy_for(issuer: str) -> str:
    return f"""\
version: "2"
default_action: deny
identity:
  issuer: "{issuer}"
  audience: "{AUDIENCE}"
tools:
  - name: echo
    action: allow
  - name: deploy
    action: allow
    identity:
      scopes: ["deploy:admin"]
"""


@pytest.fixture(scope="module")
def issuer() -> Iterator[TestIssuer]:
    server = TestIssuer([KEY]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(
    issuer: TestIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, ScriptedUpstream, Path]]:
    tmp = tmp_path_factory.mktemp("identity")
    with (
        scripted(json_answer) as upstream,
        agentwall_start(
            tmp,
            upstream.url,
            "--workers",
            "1",
            "--upstream-header",
            "X-Api-Key: proxy-own-key",
            policy=policy_for(issuer.url),
        ) as (url, proc, log_path),
    ):
        yield port_of(url), upstream, log_path
        assert stop(proc) == 0


def token(issuer: TestIssuer, **overrides: Any) -> str:
    return sign(KEY, claims(issuer.url, **overrides))


def bearer(issuer: TestIssuer, **overrides: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(issuer, **overrides)}"}


def log_entries(log_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]


@pytest.mark.timeout(60)
def test_no_token_is_401_with_resource_metadata(stack: tuple[int, ScriptedUpstream, Path]) -> None:
    port, upstream, log_path = stack
    before = len(upstream.seen)
    host = {"Host": f"127.0.0.1:{port}"}  # the metadata URL follows the Host header
    (reply,), _ = raw(port, post(call("echo", {"text": "x"}, 1), headers=host))
    assert reply[0] == 401
    challenge = reply[1]["www-authenticate"]
    assert challenge.startswith("Bearer ")
    # The identity gate names the origin-level metadata document (it covers / and /mcp).
    assert f'resource_metadata="http://127.0.0.1:{port}/.well-known/oauth-protected-resource' in (
        challenge
    )
    assert rpc(reply)["error"]["code"] == -32007
    assert len(upstream.seen) == before
    refused = [e for e in log_entries(log_path) if e.get("rule_id") == "identity.authentication"]
    assert refused  # audited before the 401 went out
    assert refused[-1]["decision"] == "deny"
    assert refused[-1]["reason"].startswith("401")


@pytest.mark.timeout(60)
def test_protected_resource_metadata(
    stack: tuple[int, ScriptedUpstream, Path], issuer: TestIssuer
) -> None:
    port, _upstream, _log = stack
    request = (
        f"GET /.well-known/oauth-protected-resource/mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    (reply,), _ = raw(port, request.encode())
    assert reply[0] == 200
    document = json.loads(reply[2])
    assert document["resource"] == f"http://127.0.0.1:{port}/mcp"
    assert document["authorization_servers"] == [issuer.url]


@pytest.mark.timeout(60)
def test_valid_token_passes_and_is_never_forwarded(
    stack: tuple[int, ScriptedUpstream, Path], issuer: TestIssuer
) -> None:
    port, upstream, log_path = stack
    (reply,), _ = raw(port, post(call("echo", {"text": "hi"}, 2), headers=bearer(issuer)))
    assert reply[0] == 200
    assert rpc(reply)["id"] == 2
    req, _body = upstream.seen[-1]
    forwarded = {k.decode().lower(): v.decode() for k, v in req.headers}
    assert forwarded["x-api-key"] == "proxy-own-key"  # the proxy's own credential
    assert "authorization" not in forwarded  # never the agent's token
    allowed = [
        e
        for e in log_entries(log_path)
        if e.get("target") == "echo" and e.get("decision") == "allow"
    ]
    assert allowed[-1]["subject"] == "alice"
    assert allowed[-1]["issuer"] == issuer.url


@pytest.mark.timeout(60)
def test_expired_token_is_401_invalid_token(
    stack: tuple[int, ScriptedUpstream, Path], issuer: TestIssuer
) -> None:
    port, _upstream, _log = stack
    expired = bearer(issuer, exp=1_000_000, iat=999_000, nbf=999_000)
    (reply,), _ = raw(port, post(call("echo", {"text": "x"}, 3), headers=expired))
    assert reply[0] == 401
    assert 'error="invalid_token"' in reply[1]["www-authenticate"]


@pytest.mark.timeout(60)
def test_missing_scope_is_403_insufficient_scope(
    stack: tuple[int, ScriptedUpstream, Path], issuer: TestIssuer
) -> None:
    port, upstream, _log = stack
    before = len(upstream.seen)
    (reply,), _ = raw(port, post(call("deploy", {}, 4), headers=bearer(issuer, scope="tools:read")))
    assert reply[0] == 403
    challenge = reply[1]["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert "deploy:admin" in challenge
    assert len(upstream.seen) == before
    (ok,), _ = raw(port, post(call("deploy", {}, 5), headers=bearer(issuer, scope="deploy:admin")))
    assert rpc(ok)["id"] == 5


@pytest.mark.timeout(60)
def test_session_of_another_subject_is_403(
    stack: tuple[int, ScriptedUpstream, Path], issuer: TestIssuer
) -> None:
    port, _upstream, _log = stack
    session = {"Mcp-Session-Id": "sess-alice-1", "MCP-Protocol-Version": "2025-11-25"}
    (mine,), _ = raw(
        port, post(call("echo", {"text": "a"}, 6), headers={**session, **bearer(issuer)})
    )
    assert mine[0] == 200
    stolen = {**session, **bearer(issuer, sub="mallory")}
    (theirs,), _ = raw(port, post(call("echo", {"text": "m"}, 7), headers=stolen))
    assert theirs[0] == 403
    assert rpc(theirs)["error"]["code"] == -32008


@pytest.mark.timeout(60)
def test_two_authorization_headers_are_400(
    stack: tuple[int, ScriptedUpstream, Path], issuer: TestIssuer
) -> None:
    port, _upstream, _log = stack
    body = call("echo", {"text": "x"}, 8).encode()
    head = (
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token(issuer)}\r\n"
        f"Authorization: Bearer {token(issuer, sub='bob')}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    (reply,), _ = raw(port, head + body)
    assert reply[0] == 400


@pytest.mark.timeout(60)
def test_readyz_includes_the_identity_keys(stack: tuple[int, ScriptedUpstream, Path]) -> None:
    import socket

    port, _upstream, _log = stack
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        (reply,), _ = read_replies(sock, 1, probe_close=False)
    assert json.loads(reply[2])["checks"]["identity_keys"] is True
