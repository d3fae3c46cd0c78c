"""Mcp-Param-* headers against the arguments, end to end: a real ``agentwall
start`` in front of a scripted upstream that lists a tool with ``x-mcp-header``
annotations and records every request it receives (so a refused call can be
shown never to have arrived)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import h11
import pytest
from test_http_front import ScriptedUpstream, post, raw, rpc, scripted
from test_start_support import agentwall_start, stop

from agentwall.audit.keys import AuditKey
from agentwall.audit.verify import verify_files

pytestmark = [pytest.mark.integration]

MODERN = "2026-07-28"
POLICY = """\
version: "2"
default_action: deny
tools:
  - name: sql
    action: allow
"""

SQL_TOOL = {
    "name": "sql",
    "inputSchema": {
        "type": "object",
        "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "limit": {"type": "integer", "x-mcp-header": "Limit"},
            "dry": {"type": "boolean", "x-mcp-header": "Dry-Run"},
            "scope": {
                "type": "object",
                "properties": {"tenant": {"type": "string", "x-mcp-header": "Tenant"}},
            },
            "query": {"type": "string"},
        },
    },
}


def upstream_answer(req: h11.Request, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    message = json.loads(body)
    if "id" not in message:
        return 202, [], b""
    if message.get("method") == "tools/list":
        result: dict[str, Any] = {"tools": [SQL_TOOL]}
    else:
        result = {"content": [{"type": "text", "text": json.dumps(message.get("params"))}]}
    answer = {"jsonrpc": "2.0", "id": message["id"], "result": result}
    return 200, [("content-type", "application/json")], json.dumps(answer).encode()


def modern(
    method: str, rpc_id: int, params: dict[str, Any], headers: dict[str, str] | None = None
) -> bytes:
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN}
    body = {"jsonrpc": "2.0", "id": rpc_id, "method": method, "params": {**params, "_meta": meta}}
    hdrs = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if method == "tools/call":
        hdrs["Mcp-Name"] = params["name"]
    hdrs.update(headers or {})
    return post(json.dumps(body), headers=hdrs)


def sql_call(rpc_id: int, arguments: dict[str, Any], **headers: str) -> bytes:
    return modern(
        "tools/call",
        rpc_id,
        {"name": "sql", "arguments": arguments},
        {f"Mcp-Param-{k.replace('_', '-')}": v for k, v in headers.items()},
    )


def reached(upstream: ScriptedUpstream, rpc_id: int) -> list[dict[str, str]]:
    """The headers of every request with this id the upstream received."""
    out = []
    for req, body in upstream.seen:
        message = json.loads(body)
        if isinstance(message, dict) and message.get("id") == rpc_id:
            out.append({k.decode().lower(): v.decode() for k, v in req.headers})
    return out


@pytest.mark.timeout(120)
def test_param_headers_are_checked_against_the_arguments(tmp_path: Path) -> None:
    key_hex = secrets.token_hex(32)
    with (
        scripted(upstream_answer) as upstream,
        agentwall_start(
            tmp_path,
            upstream.url,
            "--workers",
            "1",
            policy=POLICY,
            env={"AGENTWALL_AUDIT_KEY": key_hex},
        ) as (url, proc, log_path),
    ):
        port = int(url.split(":")[2].split("/")[0])

        def send(data: bytes) -> tuple[int, Any]:
            (reply,), _ = raw(port, data)
            return reply[0], rpc(reply)

        # Before any tools/list the proxy does not know the schema: the call
        # goes on (the upstream, which knows it, checks for itself).
        status, _ = send(sql_call(1, {"region": "us-west1"}, Region="eu-west1"))
        assert status == 200
        assert reached(upstream, 1)

        status, answer = send(modern("tools/list", 2, {}))
        assert status == 200
        assert answer["result"]["tools"][0]["name"] == "sql"

        # Every header agrees with its argument: forwarded, headers intact.
        args = {
            "region": "Hello, 世界",
            "limit": 5,
            "dry": False,
            "scope": {"tenant": "acme"},
            "query": "SELECT 1",
        }
        status, answer = send(
            sql_call(
                10,
                args,
                Region="=?base64?SGVsbG8sIOS4lueVjA==?=",
                limit="5.0",
                DRY_RUN="false",
                Tenant="acme",
            )
        )
        assert status == 200, answer
        assert answer["id"] == 10
        (seen,) = reached(upstream, 10)
        assert seen["mcp-param-region"] == "=?base64?SGVsbG8sIOS4lueVjA==?="
        assert seen["mcp-param-tenant"] == "acme"

        refused = {
            # a header that lies about the body
            11: sql_call(11, {"region": "us-west1"}, Region="eu-west1"),
            # a value in the body, no header (an intermediary saw no region)
            12: sql_call(12, {"region": "us-west1"}),
            # a header for an argument the body does not have
            13: sql_call(13, {"query": "q"}, Region="us-west1"),
            # a header for a null argument
            14: sql_call(14, {"region": None}, Region="us-west1"),
            # integers compare as numbers, not as anything
            15: sql_call(15, {"limit": 5}, Limit="6"),
            # a nested argument
            16: sql_call(16, {"scope": {"tenant": "acme"}}, Tenant="other"),
            # an invalid Base64 sentinel (refused with the head, any tool)
            17: sql_call(17, {"region": "x"}, Region="=?base64?eA?="),
        }
        messages = {}
        for rpc_id, data in refused.items():
            status, answer = send(data)
            assert status == 400, (rpc_id, answer)
            assert answer["error"]["code"] == -32020, (rpc_id, answer)
            assert answer["id"] == rpc_id
            messages[rpc_id] = answer["error"]["message"]
            assert not reached(upstream, rpc_id), rpc_id
        assert "Mcp-Param-Region" in messages[11]
        assert "'region'" in messages[11]
        assert "missing" in messages[12]
        assert "Mcp-Param-Tenant" in messages[16]
        assert "'scope.tenant'" in messages[16]

        # Absent and null arguments with no header: nothing to mirror.
        for rpc_id, arguments in ((20, {"query": "q"}), (21, {"region": None}), (22, {})):
            status, answer = send(sql_call(rpc_id, arguments))
            assert status == 200, (rpc_id, answer)
            assert reached(upstream, rpc_id)

        # Before 2026-07-28 Mcp-Param-* headers mean nothing: not compared.
        legacy = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 30,
                "method": "tools/call",
                "params": {"name": "sql", "arguments": {"region": "us-west1"}},
            }
        )
        (reply,), _ = raw(
            port,
            post(legacy, headers={"MCP-Protocol-Version": "2025-11-25", "Mcp-Param-Region": "x"}),
        )
        assert reply[0] == 200
        assert reached(upstream, 30)
        assert stop(proc) == 0

    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    stages = {
        e["rpc_id"]: e["detail"]
        for e in entries
        if e["event"] == "error" and "refused before judging" in e["reason"]
    }
    assert set(stages) == set(refused)
    assert {rpc_id for rpc_id, d in stages.items() if d["stage"] == "param_headers"} == set(
        refused
    ) - {17}
    assert stages[17]["stage"] == "request_head"
    assert all(d["code"] == -32020 for d in stages.values())
    assert all(d["http_status"] == 400 for d in stages.values())
    # The refused calls were never judged: no decision entry names them.
    decided = {e.get("rpc_id") for e in entries if e["event"] == "decision"}
    assert not decided & set(refused)
    outcome = verify_files([log_path], [AuditKey(bytes.fromhex(key_hex), source="test")])
    assert outcome.valid, outcome.report


def upstream_with_list_changed(
    req: h11.Request, body: bytes
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Like ``upstream_answer``, but a call to the tool ``change`` is answered
    over SSE with ``notifications/tools/list_changed`` before its result."""
    message = json.loads(body)
    params = message.get("params") if isinstance(message, dict) else None
    if isinstance(params, dict) and params.get("name") == "change":
        note = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
        answer = {"jsonrpc": "2.0", "id": message["id"], "result": {"content": []}}
        stream = f"event: message\ndata: {json.dumps(note)}\n\n"
        stream += f"event: message\ndata: {json.dumps(answer)}\n\n"
        return 200, [("content-type", "text/event-stream")], stream.encode()
    return upstream_answer(req, body)


@pytest.mark.timeout(120)
def test_tools_list_changed_forgets_the_declarations(tmp_path: Path) -> None:
    policy = POLICY + "  - name: change\n    action: allow\n"
    with (
        scripted(upstream_with_list_changed) as upstream,
        agentwall_start(tmp_path, upstream.url, "--workers", "1", policy=policy) as (
            url,
            _proc,
            _log,
        ),
    ):
        port = int(url.split(":")[2].split("/")[0])

        def send(data: bytes) -> int:
            (reply,), _ = raw(port, data)
            return int(reply[0])

        assert send(modern("tools/list", 1, {})) == 200
        assert send(sql_call(2, {"region": "us-west1"}, Region="eu-west1")) == 400
        assert not reached(upstream, 2)
        # The upstream says its tools changed: the old declarations are stale.
        (reply,), _ = raw(port, modern("tools/call", 3, {"name": "change", "arguments": {}}))
        assert reply[0] == 200
        assert b"notifications/tools/list_changed" in reply[2]
        # Unknown again until the next list: forwarded for the upstream to check.
        assert send(sql_call(4, {"region": "us-west1"}, Region="eu-west1")) == 200
        assert reached(upstream, 4)
        # Listed again: checked again.
        assert send(modern("tools/list", 5, {})) == 200
        assert send(sql_call(6, {"region": "us-west1"}, Region="eu-west1")) == 400
        assert not reached(upstream, 6)
