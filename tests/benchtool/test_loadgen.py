"""The load generator against the real built-in upstreams (HTTP and stdio)."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from agentwall.benchtool.loadgen import HttpTarget, LoadSpec, StdioTarget, run_load
from agentwall.benchtool.procs import FastUpstream

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_exact_call_count_across_processes(fast_upstream: FastUpstream) -> None:
    seen: dict[str, Any] = {}

    @contextmanager
    def around(pids: list[int]) -> Any:
        seen["pids"] = pids
        yield

    spec = LoadSpec(HttpTarget.from_url(fast_upstream.url), concurrency=5, calls=601, processes=2)
    result = run_load(spec, around=around)
    assert result.processes == 2
    assert result.calls == 601
    assert len(result.latencies_ns) == 601
    assert result.latencies_ns == sorted(result.latencies_ns)
    assert sum(len(v) for v in result.by_kind_ns.values()) == 601
    assert result.failures == []
    # Direct to the upstream nothing is enforced: every kind answers "ok".
    assert result.unexpected(enforcing=False) == {}
    assert {o for counts in result.outcomes.values() for o in counts} == {"ok"}
    assert set(result.outcomes) >= {"echo_tiny", "tools_list", "deny_tool"}
    assert seen["pids"] == []
    assert result.loadgen_cpu_s > 0
    assert result.calls_per_s > 0
    # The same mix through an enforcing proxy would flag these as unexpected.
    assert "deny_tool" in result.unexpected(enforcing=True)


def test_duration_mode_stops_in_time(fast_upstream: FastUpstream) -> None:
    spec = LoadSpec(HttpTarget.from_url(fast_upstream.url), concurrency=2, duration_s=0.5)
    result = run_load(spec)
    assert result.calls > 10
    assert 0.4 < result.wall_s < 5


def test_unreachable_target_is_an_error_not_a_result() -> None:
    from agentwall.benchtool.loadgen import LoadError
    from agentwall.benchtool.procs import free_port

    spec = LoadSpec(HttpTarget("127.0.0.1", free_port()), concurrency=1, calls=10)
    with pytest.raises(LoadError, match="load process failed"):
        run_load(spec)


def test_stdio_target(tmp_path: Path) -> None:
    server = (sys.executable, "-m", "agentwall.demo.stdio_server")
    spec = LoadSpec(
        StdioTarget(server, stderr_path=str(tmp_path / "err")), concurrency=2, calls=300
    )
    pids: list[int] = []

    @contextmanager
    def around(reported: list[int]) -> Any:
        pids.extend(reported)
        yield

    result = run_load(spec, around=around)
    assert result.calls == 300
    assert result.unexpected(enforcing=False) == {}
    assert len(pids) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["err.0", "err.1"]


def test_stdio_server_with_sdk_client() -> None:
    seen: dict[str, Any] = {"order": []}

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen["order"].append(progress)

    async def main() -> None:
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "agentwall.demo.stdio_server"]
        )
        async with Client(params) as client:
            seen["tools"] = len((await client.list_tools()).tools)
            echo = await client.call_tool("echo", {"text": "x" * 70_000})
            seen["echo"] = len(echo.content[0].text)  # type: ignore[union-attr]
            await client.call_tool(
                "progress", {"steps": 2, "delay_ms": 10}, progress_callback=on_progress
            )
            seen["order"].append("result")

    anyio.run(main)
    assert seen == {"tools": 7, "echo": 70_000, "order": [1.0, 2.0, "result"]}


def test_stdio_server_garbage_gets_parse_errors() -> None:
    lines = b'not json\n{"jsonrpc":"2.0","id":1,"method":"ping"}\n'
    done = subprocess.run(
        [sys.executable, "-m", "agentwall.demo.stdio_server"],
        input=lines,
        capture_output=True,
        timeout=60,
        check=True,
    )
    replies = [json.loads(x) for x in done.stdout.splitlines()]
    assert replies[0]["error"]["code"] == -32700
    assert replies[1] == {"jsonrpc": "2.0", "id": 1, "result": {}}
