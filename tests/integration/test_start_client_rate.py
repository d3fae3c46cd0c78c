"""The policy's ``client:`` rate limit through a real ``agentwall start``.

The bypass it closes: a session bucket belongs to an upstream-issued
``Mcp-Session-Id``, so an agent that sends a fresh ``initialize`` gets a new
session and a full bucket.  With ``client:``, every session of one client
draws on one bucket: the client is the verified identity when the policy has
``identity:``, else the peer address.

Rates of 0.01 calls/s with small bursts make every count exact: no token comes
back during a test, so N allowed calls are followed by a refusal, whatever the
machine's speed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from test_start_support import agentwall_start, stop, upstream_server

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "io"))
sys.path.insert(0, str(HERE.parents[1] / "identity"))
from oidc_testkit import AUDIENCE, TestIssuer, claims, rsa_key, sign  # noqa: E402
from test_http_front import port_of, post, raw, rpc, scripted  # noqa: E402
from test_http_relay import Script, call  # noqa: E402

pytestmark = [pytest.mark.integration]

SESSION_ONLY = """\
version: "2"
default_action: deny
session: {max_calls_per_second: 0.01, burst: 3}
tools:
  - {name: echo, action: allow, risk: low}
"""
WITH_CLIENT = SESSION_ONLY + "client: {max_calls_per_second: 0.01, burst: 5}\n"


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


async def echo_in_fresh_sessions(url: str, calls_per_session: list[int]) -> list[list[Any]]:
    """One SDK client (so one initialize, one upstream session) per entry;
    each makes that many echo calls.  Returns, per session, "ok" or the
    refusal's JSON-RPC error for each call."""
    outcomes: list[list[Any]] = []
    for count in calls_per_session:
        seen: list[Any] = []
        async with Client(url, mode="legacy") as client:
            for i in range(count):
                try:
                    await client.call_tool("echo", {"text": f"call {i}"})
                    seen.append("ok")
                except MCPError as exc:
                    seen.append(exc.error)
        outcomes.append(seen)
    return outcomes


def run_sessions(url: str, calls_per_session: list[int]) -> list[list[Any]]:
    return asyncio.run(asyncio.wait_for(echo_in_fresh_sessions(url, calls_per_session), 120))


def refusal_rules(outcomes: list[list[Any]]) -> list[list[str]]:
    """Per session: "ok", or the rule of a -32029 refusal (anything else fails)."""
    shown: list[list[str]] = []
    for seen in outcomes:
        row = []
        for item in seen:
            if item == "ok":
                row.append("ok")
                continue
            assert item.code == -32029, item
            assert item.data["retry_after_ms"] > 0
            row.append(item.data["rule"])
        shown.append(row)
    return shown


@pytest.mark.timeout(180)
@pytest.mark.parametrize("workers", ["2", "0"])
def test_fresh_sessions_do_not_reset_the_client_bucket(tmp_path: Path, workers: str) -> None:
    with (
        upstream_server(tmp_path) as (upstream_url, _control),
        agentwall_start(tmp_path, upstream_url, "--workers", workers, policy=WITH_CLIENT) as (
            url,
            proc,
            log_path,
        ),
    ):
        # Session bursts are 3, the client's 5: 3 + 2 pass, then every call
        # is refused by the client bucket, in this session and in fresh ones.
        outcomes = run_sessions(url, [3, 3, 2, 1])
        assert stop(proc) == 0

    assert refusal_rules(outcomes) == [
        ["ok", "ok", "ok"],
        ["ok", "ok", "rate_limit.client"],
        ["rate_limit.client", "rate_limit.client"],
        ["rate_limit.client"],
    ]
    first_refusal = outcomes[1][2]
    assert "client" in first_refusal.message
    decisions = [e for e in read_log(log_path) if e.get("event") == "decision"]
    refused = [e for e in decisions if e.get("rule_id") == "rate_limit.client"]
    assert len(refused) == 4
    assert all(e["decision"] == "deny" for e in refused)
    # Four upstream-issued sessions, all refused by the one client bucket.
    calls = [e for e in decisions if e.get("method") == "tools/call"]
    sessions = list(dict.fromkeys(e["session"] for e in calls))
    assert len(sessions) == 4
    assert not any(s.startswith(("peer:", "sub:")) for s in sessions)
    assert {e["session"] for e in refused} == set(sessions[1:])


@pytest.mark.timeout(180)
def test_without_the_key_each_fresh_session_has_a_full_bucket(tmp_path: Path) -> None:
    with (
        upstream_server(tmp_path) as (upstream_url, _control),
        agentwall_start(tmp_path, upstream_url, "--workers", "1", policy=SESSION_ONLY) as (
            url,
            proc,
            log_path,
        ),
    ):
        outcomes = run_sessions(url, [4, 4, 4])
        assert stop(proc) == 0

    # The old behaviour, unchanged: 3 per session, every session.
    assert refusal_rules(outcomes) == [["ok", "ok", "ok", "rate_limit.session"]] * 3
    rules = {e.get("rule_id") for e in read_log(log_path) if e.get("event") == "decision"}
    assert "rate_limit.client" not in rules


# -- identity on: the client is the verified subject, not the address ------------------------

KEY = rsa_key("rsa-client")


@pytest.fixture(scope="module")
def issuer() -> Iterator[TestIssuer]:
    server = TestIssuer([KEY]).start()
    yield server
    server.stop()


def identity_policy(issuer_url: str) -> str:
    return f"""\
version: "2"
default_action: deny
identity: {{issuer: "{issuer_url}", audience: "{AUDIENCE}"}}
session: {{max_calls_per_second: 0.01, burst: 2}}
client: {{max_calls_per_second: 0.01, burst: 3}}
tools:
  - {{name: echo, action: allow, risk: low}}
"""


@pytest.mark.timeout(120)
def test_with_identity_the_client_is_the_subject(tmp_path: Path, issuer: TestIssuer) -> None:
    def bearer(subject: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {sign(KEY, claims(issuer.url, sub=subject))}"}

    with (
        scripted(Script()) as upstream,
        agentwall_start(
            tmp_path, upstream.url, "--workers", "1", policy=identity_policy(issuer.url)
        ) as (url, proc, log_path),
    ):
        port = port_of(url)
        ids = iter(range(1, 1000))

        def initialize(subject: str) -> str:
            body = json.dumps(
                {"jsonrpc": "2.0", "id": next(ids), "method": "initialize", "params": {}}
            )
            (reply,), _ = raw(port, post(body, headers=bearer(subject)))
            assert reply[0] == 200, reply
            return str(reply[1]["mcp-session-id"])

        def echo(subject: str, session_id: str) -> str:
            headers = {**bearer(subject), "Mcp-Session-Id": session_id}
            (reply,), _ = raw(port, post(call("plain", next(ids)), headers=headers))
            answer = rpc(reply)
            if "error" not in answer:
                return "ok"
            assert answer["error"]["code"] == -32029, answer
            assert reply[0] == 429
            return str(answer["error"]["data"]["rule"])

        alice_1, alice_2 = initialize("alice"), initialize("alice")
        assert alice_1 != alice_2
        got = [echo("alice", alice_1), echo("alice", alice_1)]  # her first session's burst
        # Her second session has a full session bucket (2), but her client
        # bucket (3) has one token left.
        got += [echo("alice", alice_2), echo("alice", alice_2)]
        # Bob calls from the same address: his own client bucket.
        bob = initialize("bob")
        got += [echo("bob", bob), echo("bob", bob)]
        assert stop(proc) == 0

    assert got == ["ok", "ok", "ok", "rate_limit.client", "ok", "ok"]
    refused = [e for e in read_log(log_path) if e.get("rule_id") == "rate_limit.client"]
    assert [(e["session"], e["subject"]) for e in refused] == [(alice_2, "alice")]
