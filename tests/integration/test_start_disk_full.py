"""A full disk under the audit log of a real ``agentwall start``.

Non-negotiable 3: the proxy answers every call with a precise error while no
entry can be made durable, forwards nothing in that time, keeps serving, and
carries on once there is room again, with no acknowledged entry lost and the
chain intact.  The disk is a real 1 MiB tmpfs (skipped where mounting one is
not allowed), the upstream the SDK server of test_start_support.py, the
client the official SDK client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from test_start_support import agentwall_start, stop, upstream_server, verify_log

from agentwall.benchtool.procs import http_status, key_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

POLICY = """\
version: "2"
default_action: deny
tools:
  - name: record
    action: allow
    parameters:
      - {name: text, type: string, required: true}
  - name: delete_everything
    action: deny
"""


@pytest.fixture
def small_disk(tmpfs: Callable[[str], Path]) -> Path:
    return tmpfs("1m")


def fill(directory: Path) -> Path:
    """Take every free byte of the file system under ``directory``."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 16, 4096, 1):  # big writes, then the last partial block
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size) == size:
                    pass
    finally:
        os.close(fd)
    return filler


async def through_a_full_disk(url: str, disk: Path) -> dict[str, Any]:
    """One SDK session across the three phases: room, no room, room again."""
    seen: dict[str, Any] = {}
    async with Client(url, mode="legacy") as client:
        before = await client.call_tool("record", {"text": "before"})
        seen["before"] = before.content[0].text  # type: ignore[union-attr]
        filler = fill(disk)
        with pytest.raises(MCPError) as allowed_but_unlogged:
            await client.call_tool("record", {"text": "during-full"})
        seen["during"] = allowed_but_unlogged.value.error
        with pytest.raises(MCPError) as denied_and_unlogged:
            await client.call_tool("delete_everything", {})
        seen["denied_during"] = denied_and_unlogged.value.error
        filler.unlink()
        # Room again: the same session, the same proxy, no restart.
        after = await client.call_tool("record", {"text": "after"})
        seen["after"] = after.content[0].text  # type: ignore[union-attr]
    return seen


def test_a_full_disk_refuses_with_a_precise_error_then_recovers(
    tmp_path: Path, small_disk: Path
) -> None:
    log_path = small_disk / "audit.log"
    with (
        upstream_server(tmp_path) as (up_url, control),
        agentwall_start(
            tmp_path,
            up_url,
            # The later --log-path wins: the log on the small disk, the
            # proxy's own output and policy on the roomy one.
            "--log-path",
            str(log_path),
            policy=POLICY,
            env=key_env(tmp_path),
        ) as (url, proc, _default_log),
    ):
        seen = asyncio.run(through_a_full_disk(url, small_disk))
        assert seen["before"] == "recorded before"
        # While no entry can be made durable: a precise error, nothing forwarded.
        error = seen["during"]
        assert error.code == -32002, error
        assert "audit log is unavailable" in error.message
        assert "No space left on device" in error.message
        assert "nothing was forwarded" in error.message
        # A denial that cannot be logged is refused the same way.
        assert seen["denied_during"].code == -32002, seen["denied_during"]
        assert seen["after"] == "recorded after"
        assert proc.poll() is None
        assert http_status("127.0.0.1", int(url.split(":")[2].split("/")[0]), "/healthz") == 200
        assert stop(proc, sig=signal.SIGTERM) == 0

    calls = (control / "calls.txt").read_text(encoding="utf-8").split()
    assert calls == ["before", "after"], calls
    assert not (control / "deleted").exists()
    entries = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    allowed = [e for e in entries if e.get("event") == "decision" and e.get("decision") == "allow"]
    assert [e.get("target") for e in allowed].count("record") == 2
    verified = verify_log(log_path, key_env(tmp_path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
