"""The official MCP SDK's stdio client launches ``agentwall wrap -- <SDK server>``.

Everything is real: the client, ``agentwall wrap`` as a subprocess, the SDK
server as its subprocess, the audit log on disk with fsync.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentwall.audit.keys import read_key_file
from agentwall.audit.verify import verify_files
from agentwall.errors import POLICY_DENIED

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SERVERS = str(Path(__file__).with_name("test_wrap_servers.py"))

POLICY = """\
version: "2"
description: "wrap tests"
default_action: deny
tools:
  - {name: echo, action: allow, parameters: [{name: text, type: string, required: true}]}
  - name: read_file
    action: allow
    parameters: [{name: path, type: string, required: true, within: ["/workspace"]}]
  - {name: progress, action: allow, parameters: [{name: steps, type: integer, maximum: 20}]}
  - {name: ask_model, action: allow, parameters: [{name: prompt, type: string}]}
  - {name: client_roots, action: allow}
  - {name: crash, action: allow}
  - {name: run_command, action: deny}
"""


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    key = tmp_path / "audit.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(0o600)
    return {"policy": policy, "key": key, "log": tmp_path / "audit.log", "dir": tmp_path}


def wrap_command(setup: dict[str, Path], *extra: str, server: str = "sdk") -> list[str]:
    return [
        sys.executable,
        "-m",
        "agentwall",
        "wrap",
        "--policy",
        str(setup["policy"]),
        "--log-path",
        str(setup["log"]),
        "--audit-key-file",
        str(setup["key"]),
        "--grace-period",
        "10",
        *extra,
        "--",
        sys.executable,
        SERVERS,
        server,
    ]


def audit_entries(setup: dict[str, Path]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in setup["log"].read_text().splitlines()]


def assert_log_verifies(setup: dict[str, Path]) -> None:
    outcome = verify_files([setup["log"]], [read_key_file(setup["key"])])
    assert outcome.valid, outcome.report


async def _sdk_session(setup: dict[str, Path]) -> dict[str, Any]:
    import mcp_types as types
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.shared.exceptions import MCPError

    seen: dict[str, Any] = {"sampling": [], "progress": []}

    async def sampling(context: Any, params: types.CreateMessageRequestParams) -> Any:
        seen["sampling"].append(params.messages[0].content.text)  # type: ignore[union-attr]
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="forty-two"),
            model="test-model",
        )

    async def roots(context: Any) -> Any:
        return types.ListRootsResult(roots=[types.Root(uri="file:///workspace", name="ws")])

    command = wrap_command(setup)
    params = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    out: dict[str, Any] = {}
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, sampling_callback=sampling, list_roots_callback=roots) as s,
    ):
        init = await s.initialize()
        out["server_name"] = init.server_info.name
        tools = await s.list_tools()
        out["tools"] = sorted(t.name for t in tools.tools)

        echoed = await s.call_tool("echo", {"text": "hello through the wall"})
        out["echo"] = echoed.content[0].text  # type: ignore[union-attr]

        for name, args in (
            ("run_command", {"command": "rm -rf /"}),
            ("read_file", {"path": "/etc/passwd"}),
            ("not_in_policy", {}),
        ):
            try:
                await s.call_tool(name, args)
            except MCPError as exc:
                out[f"denied:{name}"] = (exc.code, exc.message, exc.data)
            else:
                out[f"denied:{name}"] = None

        allowed_read = await s.call_tool("read_file", {"path": "/workspace/a.txt"})
        out["read"] = allowed_read.content[0].text  # type: ignore[union-attr]

        progress_at_result: list[int] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen["progress"].append((progress, total, message))

        result = await s.call_tool("progress", {"steps": 3}, progress_callback=on_progress)
        progress_at_result.append(len(seen["progress"]))
        out["progress_result"] = result.content[0].text  # type: ignore[union-attr]
        out["progress_seen_before_result"] = progress_at_result[0]
        out["progress"] = list(seen["progress"])

        asked = await s.call_tool("ask_model", {"prompt": "what is six times seven?"})
        out["sampling_result"] = asked.content[0].text  # type: ignore[union-attr]
        out["sampling_prompts"] = list(seen["sampling"])

        rooted = await s.call_tool("client_roots", {})
        out["roots"] = rooted.content[0].text  # type: ignore[union-attr]

        again = await s.call_tool("echo", {"text": "still here"})
        out["after_denials"] = again.content[0].text  # type: ignore[union-attr]
    return out


def test_sdk_client_through_wrap(setup: dict[str, Path]) -> None:
    out = anyio.run(_sdk_session, setup)

    assert out["server_name"] == "wrap-test-server"
    # tools/list is filtered: the denied tool is not offered.
    assert out["tools"] == ["ask_model", "client_roots", "crash", "echo", "progress", "read_file"]
    assert out["echo"] == "hello through the wall"

    code, message, data = out["denied:run_command"]
    assert code == POLICY_DENIED
    assert "tools[run_command]" in message
    assert data["rule"] == "tools[run_command]"
    assert data["decision_id"]

    code, message, data = out["denied:read_file"]
    assert code == POLICY_DENIED
    assert data["pointer"] == "/arguments/path"
    assert "within" in data["rule"] or "path" in data["rule"]

    code, _message, data = out["denied:not_in_policy"]
    assert code == POLICY_DENIED
    assert data["rule"] is None  # default_action decided

    assert out["read"] == "contents of /workspace/a.txt"
    assert out["progress_result"] == "done after 3 steps"
    assert out["progress_seen_before_result"] == 3
    assert [p[0] for p in out["progress"]] == [1, 2, 3]
    assert out["sampling_prompts"] == ["what is six times seven?"]
    assert out["sampling_result"] == "model said: forty-two"
    assert out["roots"] == "file:///workspace"
    assert out["after_denials"] == "still here"

    entries = audit_entries(setup)
    decisions = [e for e in entries if e["event"] == "decision"]
    by_target = {(e["method"], e.get("target")): e for e in decisions}
    assert by_target[("tools/call", "run_command")]["decision"] == "deny"
    assert by_target[("tools/call", "echo")]["decision"] == "allow"
    # Server-initiated requests are judged and recorded too.
    assert by_target[("sampling/createMessage", None)]["decision"] == "allow"
    assert by_target[("roots/list", None)]["decision"] == "allow"
    progress = [e for e in decisions if e["method"] == "notifications/progress"]
    assert len(progress) == 3
    assert entries[0]["event"] == "proxy_start"
    assert entries[-1]["event"] == "proxy_stop"
    assert_log_verifies(setup)


def test_dry_run_forwards_denied_calls(setup: dict[str, Path]) -> None:
    async def session() -> Any:
        from mcp.client.session import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client

        command = wrap_command(setup, "--dry-run")
        params = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            tools = await s.list_tools()
            result = await s.call_tool("run_command", {"command": "ls"})
            return sorted(t.name for t in tools.tools), result.content[0].text  # type: ignore[union-attr]

    tools, text = anyio.run(session)
    assert text == "ran ls"
    assert "echo" in tools
    entries = audit_entries(setup)
    assert entries[1]["event"] == "dry_run_active"
    run = [e for e in entries if e.get("target") == "run_command"]
    assert run[0]["decision"] == "dry_run_deny"
    assert_log_verifies(setup)


def test_a_refused_server_request_is_answered_in_the_hosts_place(setup: dict[str, Path]) -> None:
    """methods: {sampling/createMessage: deny}: the host never sees the
    sampling request, and the server gets the refusal instead of waiting."""
    setup["policy"].write_text(POLICY + "methods:\n  sampling/createMessage: deny\n")

    async def session() -> Any:
        import mcp_types as types
        from mcp.client.session import ClientSession
        from mcp.client.stdio import StdioServerParameters, stdio_client

        asked: list[str] = []

        async def sampling(context: Any, params: types.CreateMessageRequestParams) -> Any:
            asked.append("called")
            return types.CreateMessageResult(
                role="assistant", content=types.TextContent(type="text", text="x"), model="m"
            )

        command = wrap_command(setup)
        params = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
        async with (
            stdio_client(params) as (read, write),
            ClientSession(read, write, sampling_callback=sampling) as s,
        ):
            from mcp.shared.exceptions import MCPError

            await s.initialize()
            # The server's tool fails with our refusal (the SDK server passes
            # it on as the call's error); it does not hang.
            with anyio.fail_after(30):
                try:
                    await s.call_tool("ask_model", {"prompt": "hi"})
                    failure = ""
                except MCPError as exc:
                    failure = exc.message
            again = await s.call_tool("echo", {"text": "ok"})
            return asked, failure, again.content[0].text  # type: ignore[union-attr]

    asked, failure, again = anyio.run(session)
    assert asked == []
    assert "methods[sampling/createMessage]" in failure
    assert again == "ok"
    refused = [e for e in audit_entries(setup) if e.get("method") == "sampling/createMessage"]
    assert refused[0]["decision"] == "deny"
    assert refused[0]["detail"] == {"origin": "server"}
    assert_log_verifies(setup)
