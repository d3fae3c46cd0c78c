"""Requests the HTTP front-end refuses before it can judge them (bad HTTP,
JSON or JSON-RPC, lying headers, an oversize body) forward nothing, but each
leaves an audit entry in the verified chain, as in ``wrap``."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from test_http_front import POLICY, json_answer, post, raw, rpc, scripted
from test_start_support import agentwall_start, stop

from agentwall.audit.keys import AuditKey
from agentwall.audit.verify import verify_files


def _entries(log_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log_path.read_text().splitlines()]


@pytest.mark.timeout(120)
def test_every_refusal_before_judging_is_audited(tmp_path: Path) -> None:
    key_hex = secrets.token_hex(32)
    with (
        scripted(json_answer) as upstream,
        agentwall_start(
            tmp_path,
            upstream.url,
            "--workers",
            "1",
            "--max-body-bytes",
            "4096",
            policy=POLICY,
            env={"AGENTWALL_AUDIT_KEY": key_hex},
        ) as (url, proc, log_path),
    ):
        port = int(url.split(":")[2].split("/")[0])
        before = len(upstream.seen)
        (reply,), _ = raw(port, b"GARBAGE\r\n\r\n")
        assert reply[0] == 400
        (reply,), _ = raw(port, post('{"jsonrpc": "2.0", "id": 7, "method": '))
        assert rpc(reply)["error"]["code"] == -32700
        (reply,), _ = raw(port, post('{"jsonrpc":"2.0","id":8,"method":"a","method":"b"}'))
        assert rpc(reply)["error"]["code"] == -32600
        (reply,), _ = raw(port, post("x" * 5000))
        assert reply[0] == 413
        (reply,), _ = raw(
            port,
            post(
                '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo"}}',
                headers={"Mcp-Method": "tools/list"},
            ),
        )
        assert reply[0] == 400
        # GET and DELETE go through the same head checks, audited the same way.
        for verb in ("GET", "DELETE"):
            (reply,), _ = raw(
                port,
                f"{verb} /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Accept: text/event-stream\r\nOrigin: http://evil.example\r\n\r\n".encode(),
            )
            assert reply[0] == 403
        assert len(upstream.seen) == before  # nothing refused was forwarded
        assert stop(proc) == 0
    log = _entries(log_path)
    refusals = [e for e in log if e["event"] == "error" and "refused before judging" in e["reason"]]
    stages = sorted(e["detail"]["stage"] for e in refusals)
    assert "http" in stages
    assert "oversize" in stages
    assert stages.count("body") == 2  # -32700 and -32600
    assert "headers_vs_body" in stages or "request_head" in stages
    assert stages.count("request_head") == 2  # the GET and the DELETE
    by_code = {e["detail"].get("code") for e in refusals}
    assert {-32700, -32600} <= by_code
    assert all(e["detail"]["peer"] == "127.0.0.1" for e in refusals)
    assert all(e["transport"] == "http" for e in refusals)
    outcome = verify_files([log_path], [AuditKey(bytes.fromhex(key_hex), source="test")])
    assert outcome.valid, outcome.report
