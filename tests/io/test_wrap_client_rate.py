"""``client:`` under ``agentwall wrap``: the wrapper serves one agent, so its
one session is the client; the client bucket applies with its own rate and
burst, before the session bucket.  A real wrap process and stdio server."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from test_wrap_servers import HERE, RAW_POLICY, Host, wait_file, wrap_argv

from agentwall.errors import RATE_LIMITED

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.mark.parametrize(
    ("limits", "rule"),
    [
        # The client bucket (burst 2) refuses before the session's (burst 5).
        (
            "session: {max_calls_per_second: 0.01, burst: 5}\n"
            "client: {max_calls_per_second: 0.01, burst: 2}\n",
            "rate_limit.client",
        ),
        ("client: {max_calls_per_second: 0.01, burst: 2}\n", "rate_limit.client"),
        # Without the key: the session limit as before.
        ("session: {max_calls_per_second: 0.01, burst: 2}\n", "rate_limit.session"),
    ],
)
def test_wrap_applies_the_client_limit(tmp_path: Path, limits: str, rule: str) -> None:
    (tmp_path / "policy.yaml").write_text(RAW_POLICY + limits)
    info = tmp_path / "server.json"
    environ = {**os.environ, "WRAP_TEST_INFO": str(info)}
    argv = wrap_argv(tmp_path, server=[sys.executable, HERE, "raw", "plain"])
    host = Host(argv, env=environ, cwd=tmp_path)
    try:
        wait_file(info)
        host.initialize()
        answers = []
        for rpc_id in (1, 2, 3):
            host.call(rpc_id, "echo", {"n": rpc_id})
            answers.append(host.recv())
        host.close_stdin()
        assert host.wait() == 0
    finally:
        host.kill()
    assert [a["id"] for a in answers] == [1, 2, 3]
    assert ["error" in a for a in answers] == [False, False, True]
    error = answers[2]["error"]
    assert error["code"] == RATE_LIMITED
    assert error["data"]["rule"] == rule
    assert error["data"]["retry_after_ms"] > 1000
    log = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    refused = [e for e in log if e.get("rule_id") == rule]
    assert [e["decision"] for e in refused] == ["deny"]
