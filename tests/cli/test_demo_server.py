"""The demo's upstream is a real SDK server that guards its own workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from agentwall.demo.run import WORKSPACE_FILES, SdkUpstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_sdk_server_reads_writes_and_refuses_traversal(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    for rel, text in WORKSPACE_FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    seen: dict[str, Any] = {}

    async def agent(url: str) -> None:
        async with Client(url) as client:
            seen["tools"] = sorted(t.name for t in (await client.list_tools()).tools)
            read = await client.call_tool("read_file", {"path": "/workspace/notes/todo.md"})
            seen["read"] = read.content[0].text  # type: ignore[union-attr]
            escape = await client.call_tool("read_file", {"path": "/workspace/../../etc/passwd"})
            seen["escape"] = (escape.is_error, escape.content[0].text)  # type: ignore[union-attr]
            saved = await client.call_tool("save_note", {"title": "t1", "text": "hi"})
            seen["saved"] = saved.is_error
            shell = await client.call_tool("run_shell", {"command": "id"})
            seen["shell"] = shell.content[0].text  # type: ignore[union-attr]

    with SdkUpstream(tmp_path, root) as upstream:
        upstream.start()
        anyio.run(agent, upstream.url)
        assert upstream.stop() is not None
    assert seen["tools"] == ["fetch_url", "read_file", "run_shell", "save_note"]
    assert seen["read"] == WORKSPACE_FILES["notes/todo.md"]
    assert seen["escape"][0] is True
    assert "outside /workspace" in seen["escape"][1]
    assert seen["saved"] is False
    assert (root / "notes" / "t1.md").read_text() == "hi"
    assert "never runs commands" in seen["shell"]
