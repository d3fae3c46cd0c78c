"""Identity over stdio: the official SDK stdio client launches a real
``agentwall wrap --identity-token-file F -- <SDK server>``; the wrapper
discovers a real issuer on 127.0.0.1 and verifies the token file the same way
the HTTP front-end verifies Bearer tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from oidc_testkit import AUDIENCE, TestIssuer, ec_key

from agentwall.errors import POLICY_DENIED, UNAUTHENTICATED

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
SERVERS = str(REPO / "tests" / "io" / "test_wrap_servers.py")

POLICY = """\
version: "2"
default_action: deny
identity:
  issuer: "{issuer}"
  audience: "{audience}"
  algorithms: [ES256]
tools:
  - {{name: echo, action: allow}}
  - name: read_file
    action: allow
    identity: {{scopes: ["files:read"]}}
"""


@pytest.fixture(scope="module")
def issuer() -> Iterator[TestIssuer]:
    server = TestIssuer([ec_key("ec-1")]).start()
    yield server
    server.stop()


@pytest.fixture
def setup(tmp_path: Path, issuer: TestIssuer) -> dict[str, Path]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(issuer=issuer.url, audience=AUDIENCE))
    key = tmp_path / "audit.key"
    key.write_text("cd" * 32 + "\n")
    key.chmod(0o600)
    return {
        "policy": policy,
        "key": key,
        "log": tmp_path / "audit.log",
        "token": tmp_path / "token",
    }


def wrap_argv(setup: dict[str, Path], *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "agentwall", "wrap",
        "--policy", str(setup["policy"]),
        "--log-path", str(setup["log"]),
        "--audit-key-file", str(setup["key"]),
        "--grace-period", "10",
        *extra,
        "--", sys.executable, SERVERS, "sdk",
    ]  # fmt: skip


def write_token(path: Path, token: str, bump: int) -> None:
    path.write_text(token + "\n")
    stamp = time.time_ns() + bump * 10**9  # a distinct mtime for every rewrite
    os.utime(path, ns=(stamp, stamp))


def test_wrap_verifies_the_token_file(setup: dict[str, Path], issuer: TestIssuer) -> None:
    write_token(setup["token"], issuer.token(scope="files:read"), 1)

    async def session() -> dict[str, Any]:
        from mcp.client.session import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client
        from mcp.shared.exceptions import MCPError

        argv = wrap_argv(setup, "--identity-token-file", str(setup["token"]))
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ))
        out: dict[str, Any] = {}

        async def attempt(name: str, args: dict[str, Any]) -> Any:
            try:
                result = await s.call_tool(name, args)
                return result.content[0].text  # type: ignore[union-attr]
            except MCPError as exc:
                return ("error", exc.code, exc.data)

        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            out["alice_read"] = await attempt("read_file", {"path": "/w/a"})
            # An external refresher rotates the token: now without the scope.
            write_token(setup["token"], issuer.token(sub="bob", scope="other"), 2)
            out["bob_read"] = await attempt("read_file", {"path": "/w/a"})
            out["bob_echo"] = await attempt("echo", {"text": "hi"})
            # Then a token that has expired: every call fails closed.
            write_token(setup["token"], issuer.token(exp=int(time.time()) - 3600), 3)
            out["expired_echo"] = await attempt("echo", {"text": "hi"})
        return out

    out = anyio.run(session)
    assert out["alice_read"] == "contents of /w/a"
    assert out["bob_read"][:2] == ("error", POLICY_DENIED)
    assert out["bob_read"][2]["category"] == "identity_scope"
    assert out["bob_echo"] == "hi"
    assert out["expired_echo"][:2] == ("error", UNAUTHENTICATED)
    assert out["expired_echo"][2]["category"] == "identity_invalid"

    rows = [json.loads(line) for line in setup["log"].read_text().splitlines()]
    calls = [r for r in rows if r.get("event") == "decision" and r.get("method") == "tools/call"]
    who = [(r["target"], r.get("subject"), r["decision"]) for r in calls]
    assert who == [
        ("read_file", "alice", "allow"),
        ("read_file", "bob", "deny"),
        ("echo", "bob", "allow"),
        ("echo", None, "deny"),
    ]
    assert all(r["issuer"] == issuer.url for r in calls if r.get("subject"))
    assert issuer.hits["/.well-known/openid-configuration"] >= 1


@pytest.mark.parametrize(
    ("token_overrides", "message"),
    [({"aud": "someone-else"}, "audience"), ({"exp": 1000}, "expired")],
)
def test_wrap_refuses_to_start_with_a_bad_token(
    setup: dict[str, Path], issuer: TestIssuer, token_overrides: dict[str, Any], message: str
) -> None:
    env = {**os.environ, "AGENTWALL_IDENTITY_TOKEN": issuer.token(**token_overrides)}
    proc = subprocess.run(
        wrap_argv(setup), stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=60
    )
    assert proc.returncode == 2
    assert message in proc.stderr.decode()
    assert not setup["log"].exists() or "proxy_start" not in setup["log"].read_text()


def test_token_without_identity_section_is_a_usage_error(
    setup: dict[str, Path], issuer: TestIssuer
) -> None:
    setup["policy"].write_text(
        'version: "2"\ndefault_action: deny\ntools: [{name: echo, action: allow}]\n'
    )
    write_token(setup["token"], issuer.token(), 1)
    proc = subprocess.run(
        wrap_argv(setup, "--identity-token-file", str(setup["token"])),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "no identity: section" in proc.stderr.decode()
