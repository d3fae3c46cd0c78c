"""The official MCP SDK client, through a real ``agentwall start``, to a real SDK server.

Every process is real: the upstream is an SDK ``MCPServer`` over streamable
HTTP (test_start_support.py), the proxy is ``python -m agentwall start`` with
its writer and workers, the client is ``mcp.Client``.  Both protocol eras are
driven: ``legacy`` (initialize, Mcp-Session-Id, 2025-11-25) and ``auto``
(2026-07-28: per-request metadata, Mcp-Method/Mcp-Name headers).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from native_support import native_skipped_on_purpose
from test_start_support import agentwall_start, stop, upstream_server, verify_log

pytestmark = [pytest.mark.integration]

POLICY = """\
version: "2"
default_action: deny
tools:
  - name: echo
    action: allow
  - name: add
    action: allow
  - name: wait_for_go
    action: allow
  - name: read_file
    action: allow
    parameters:
      - name: path
        type: string
        pattern: "/workspace/.*"
resources:
  - uri: "config://.*"
    action: allow
prompts:
  - name: greet
    action: allow
"""

ALLOWED_TOOLS = {"echo", "add", "wait_for_go", "read_file"}
ALL_TOOLS = ALLOWED_TOOLS | {"delete_everything", "ask_model", "record"}


def read_log(path: Path) -> list[dict[str, Any]]:
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


async def session_walkthrough(
    url: str, control: Path, mode: str, *, streaming: bool
) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    async with Client(url, mode=mode) as client:
        seen["protocol"] = client.protocol_version
        tools = await client.list_tools()
        seen["tools"] = {t.name for t in tools.tools}

        added = await client.call_tool("add", {"a": 2, "b": 3})
        seen["add"] = added.structured_content

        with pytest.raises(MCPError) as denied_tool:
            await client.call_tool("delete_everything", {})
        seen["denied_tool"] = denied_tool.value.error

        with pytest.raises(MCPError) as denied_arg:
            await client.call_tool("read_file", {"path": "/etc/shadow"})
        seen["denied_arg"] = denied_arg.value.error

        # The session is still usable after two denials.
        echoed = await client.call_tool("echo", {"text": "still here"})
        seen["echo_after_denial"] = echoed.content[0].text  # type: ignore[union-attr]

        allowed_read = await client.call_tool("read_file", {"path": "/workspace/a.txt"})
        seen["read_ok"] = allowed_read.content[0].text  # type: ignore[union-attr]

        # Progress must reach us while the tool still runs: the tool only
        # finishes after we create the 'go' file on seeing the last progress.
        progress: list[float] = []
        if not streaming:
            # A JSON-response upstream cannot stream progress at all; the
            # call must still come back whole.
            (control / "go").write_text("go", encoding="utf-8")

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(value)
            if value >= 3:
                (control / "go").write_text("go", encoding="utf-8")

        result = await client.call_tool(
            "wait_for_go", {"steps": 3}, progress_callback=on_progress, read_timeout_seconds=60
        )
        seen["progress"] = progress
        seen["wait_result"] = result.content[0].text  # type: ignore[union-attr]
        (control / "go").unlink()

        resource = await client.read_resource("config://app")
        seen["resource"] = resource.contents[0].text  # type: ignore[union-attr]
        with pytest.raises(MCPError) as denied_resource:
            await client.read_resource("note://secret")
        seen["denied_resource"] = denied_resource.value.error

        prompt = await client.get_prompt("greet", {"name": "Ada"})
        seen["prompt"] = prompt.messages[0].content.text  # type: ignore[union-attr]
        templates = await client.list_resource_templates()
        seen["templates"] = [t.uri_template for t in templates.resource_templates]
    return seen


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("mode", "json_response", "busy_poll_us"),
    # The default polls through the waits (agentwall.io.busy_poll); "0" is
    # the sleeping loop, which must behave the same.
    [
        ("legacy", False, "1000"),
        ("auto", False, "1000"),
        ("legacy", True, "1000"),
        ("auto", False, "0"),
    ],
)
def test_sdk_client_through_agentwall(
    tmp_path: Path, mode: str, json_response: bool, busy_poll_us: str
) -> None:
    with (
        upstream_server(tmp_path, json_response=json_response) as (upstream_url, control),
        agentwall_start(
            tmp_path, upstream_url, "--workers", "2", "--busy-poll-us", busy_poll_us, policy=POLICY
        ) as (url, proc, log_path),
    ):
        walk = session_walkthrough(url, control, mode, streaming=not json_response)
        seen = asyncio.run(asyncio.wait_for(walk, 120))
        code = stop(proc, sig=signal.SIGTERM)

    assert code == 0
    assert seen["protocol"] == ("2026-07-28" if mode == "auto" else "2025-11-25")
    assert seen["tools"] == ALLOWED_TOOLS  # delete_everything filtered out of tools/list
    assert seen["add"] == {"result": 5}

    tool_error = seen["denied_tool"]
    assert tool_error.code == -32001
    assert "delete_everything" in tool_error.message or "default" in tool_error.message
    assert tool_error.data["decision_id"]
    assert not (control / "deleted").exists()  # the upstream never saw it

    arg_error = seen["denied_arg"]
    assert arg_error.code == -32001
    assert arg_error.data["pointer"] == "/arguments/path"
    assert arg_error.data["rule"]

    assert seen["echo_after_denial"] == "still here"
    assert seen["read_ok"] == "contents of /workspace/a.txt"
    assert seen["progress"] == ([] if json_response else [1.0, 2.0, 3.0])
    assert seen["wait_result"] == "went"
    assert seen["resource"] == "mode=test"
    assert seen["denied_resource"].code == -32001
    assert seen["prompt"] == "Please greet Ada warmly."
    assert seen["templates"] == ["note://{name}"]

    verified = verify_log(log_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    entries = read_log(log_path)
    kinds = [e.get("event") for e in entries]
    assert kinds[0] == "proxy_start"
    assert "policy_loaded" in kinds
    assert kinds[-1] == "proxy_stop"
    decisions = [e for e in entries if e.get("event") == "decision"]
    denied = {(e.get("method"), e.get("target")) for e in decisions if e.get("decision") == "deny"}
    assert ("tools/call", "delete_everything") in denied
    assert ("tools/call", "read_file") in denied
    assert ("resources/read", "note://secret") in denied
    ids = {e.get("call_id") for e in decisions}
    assert tool_error.data["decision_id"] in ids
    assert arg_error.data["decision_id"] in ids


@pytest.mark.timeout(120)
def test_no_filter_tools_list_shows_every_tool(tmp_path: Path) -> None:
    async def list_tools(url: str) -> set[str]:
        async with Client(url, mode="legacy") as client:
            return {t.name for t in (await client.list_tools()).tools}

    with (
        upstream_server(tmp_path) as (upstream_url, _control),
        agentwall_start(
            tmp_path, upstream_url, "--no-filter-tools-list", "--workers", "0", policy=POLICY
        ) as (
            url,
            _proc,
            _log,
        ),
    ):
        names = asyncio.run(asyncio.wait_for(list_tools(url), 60))
    assert names == ALL_TOOLS


@pytest.mark.timeout(120)
def test_dry_run_logs_and_forwards(tmp_path: Path) -> None:
    async def call_denied(url: str) -> str:
        async with Client(url, mode="legacy") as client:
            result = await client.call_tool("delete_everything", {})
            return result.content[0].text  # type: ignore[union-attr,no-any-return]

    with (
        upstream_server(tmp_path) as (upstream_url, control),
        agentwall_start(
            tmp_path,
            upstream_url,
            "--workers",
            "1",
            "--report-path",
            str(tmp_path / "report.json"),
            policy=POLICY,
            env={"AGENTWALL_DRY_RUN": "true"},
        ) as (url, proc, log_path),
    ):
        text = asyncio.run(asyncio.wait_for(call_denied(url), 60))
        assert stop(proc) == 0
    assert text == "deleted"
    assert (control / "deleted").exists()
    entries = read_log(log_path)
    assert any(e.get("event") == "dry_run_active" for e in entries)
    dry = [e for e in entries if e.get("decision") == "dry_run_deny"]
    assert [(e["method"], e["target"]) for e in dry] == [("tools/call", "delete_everything")]
    assert verify_log(log_path).returncode == 0
    report = json.loads((tmp_path / "report.json").read_text())  # --report-path, at shutdown
    assert report["dry_run_active"] is True
    assert report["decisions"]["dry_run_deny"] == 1
    assert report["chain"].startswith("valid")


@pytest.mark.timeout(60)
def start_refused(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``agentwall start ARGS`` that must refuse to start (and so returns)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "agentwall",
            "start",
            *args,
            "--listen",
            "127.0.0.1:0",
            "--log-path",
            str(tmp_path / "a.log"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_policy_that_does_not_load_exits_2_with_its_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text('version: "2"\ndefault_action: deny\ntools:\n  - name: x\n    acton: allow\n')
    proc = start_refused(tmp_path, "--policy", str(bad))
    assert proc.returncode == 2
    assert f"{bad}:5" in proc.stderr
    assert "acton" in proc.stderr


@pytest.mark.parametrize("value", ["-1", "1000001", "soon"])
def test_a_bad_busy_poll_budget_exits_2(tmp_path: Path, value: str) -> None:
    proc = start_refused(tmp_path, "--busy-poll-us", value)
    assert proc.returncode == 2
    assert "--busy-poll-us" in proc.stderr
    assert not (tmp_path / "a.log").exists()  # refused before anything started


@pytest.mark.timeout(120)
def test_sighup_reloads_and_a_bad_reload_keeps_the_old_policy(tmp_path: Path) -> None:
    async def echo(url: str) -> tuple[str | None, int | None]:
        async with Client(url, mode="legacy") as client:
            try:
                result = await client.call_tool("echo", {"text": "hi"})
            except MCPError as exc:
                return None, exc.error.code
            return result.content[0].text, None  # type: ignore[union-attr]

    with (
        upstream_server(tmp_path) as (upstream_url, _control),
        agentwall_start(tmp_path, upstream_url, "--workers", "1", policy=POLICY) as (
            url,
            proc,
            log_path,
        ),
    ):
        assert asyncio.run(echo(url)) == ("hi", None)
        policy_file = next(tmp_path.glob("policy-*.yaml"))
        policy_file.write_text(POLICY.replace("  - name: echo\n    action: allow\n", ""))
        proc.send_signal(signal.SIGHUP)
        assert _eventually(lambda: asyncio.run(echo(url)) == (None, -32001))
        policy_file.write_text("version: [broken\n")
        proc.send_signal(signal.SIGHUP)
        assert _eventually(lambda: "policy_reload_failed" in log_path.read_text())
        assert asyncio.run(echo(url)) == (None, -32001)  # still the second policy
        assert stop(proc) == 0
    kinds = [e.get("event") for e in read_log(log_path)]
    assert kinds.count("policy_loaded") == 2
    assert kinds.count("policy_reload_failed") == 1


def _eventually(check: Any, tries: int = 100) -> bool:
    import time

    for _ in range(tries):
        if check():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.timeout(120)
def test_health_ready_and_metrics(tmp_path: Path) -> None:
    with (
        upstream_server(tmp_path) as (upstream_url, _control),
        agentwall_start(tmp_path, upstream_url, "--workers", "1", policy=POLICY) as (
            url,
            _proc,
            _log,
        ),
    ):
        base = url.rsplit("/", 1)[0]
        asyncio.run(_one_call(url))
        with urllib.request.urlopen(base + "/healthz", timeout=10) as resp:  # noqa: S310
            assert resp.status == 200
        with urllib.request.urlopen(base + "/readyz", timeout=10) as resp:  # noqa: S310
            ready = json.loads(resp.read())
        assert ready["ready"] is True
        assert ready["checks"] == {"audit_writer": True, "workers": True, "upstream": True}
        with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:  # noqa: S310
            text = resp.read().decode()
    assert 'agentwall_decisions_total{outcome="allow"}' in text
    assert "agentwall_decision_seconds_bucket" in text
    assert "agentwall_audit_seconds_count" in text
    assert "agentwall_decision_cache_hits_total" in text
    # A clean install builds the C head scan, and the sidecar runs it.
    python_on_purpose = (
        native_skipped_on_purpose() or os.environ.get("AGENTWALL_HTTPHEAD") == "python"
    )
    impl = "python" if python_on_purpose else "native"
    assert f'agentwall_native_info{{part="http_head_scan",impl="{impl}"}} 1' in text
    json_impl = (
        "python"
        if native_skipped_on_purpose() or os.environ.get("AGENTWALL_JSONSCAN") == "python"
        else "native"
    )
    assert f'agentwall_native_info{{part="json_syntax_counts",impl="{json_impl}"}} 1' in text


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def _calls_and_a_denial(url: str) -> int:
    async with Client(url, mode="legacy") as client:
        for i in range(5):
            await client.call_tool("echo", {"text": f"x{i}"})
        with pytest.raises(MCPError):
            await client.call_tool("delete_everything", {})
        return 6


@pytest.mark.parametrize("audit_from", ["workers", "front-end"])
def test_every_decision_is_logged_whoever_writes_it(tmp_path: Path, audit_from: str) -> None:
    """With ``--audit-from workers`` the evaluator workers write the entries
    of the calls they decide, so the front-end's own writes (its audit
    client's count) are only its lifecycle entries; with ``front-end`` (the
    default) it writes them all.  Either way every call has exactly one entry
    and the chain verifies."""
    with (
        upstream_server(tmp_path) as (upstream_url, _control),
        agentwall_start(
            tmp_path, upstream_url, "--audit-from", audit_from, "--no-cache", policy=POLICY
        ) as (url, proc, log_path),
    ):
        tool_calls = asyncio.run(_calls_and_a_denial(url))
        base = url.rsplit("/", 1)[0]
        with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:  # noqa: S310
            text = resp.read().decode()
        stop(proc)
    decisions = [e for e in read_log(log_path) if e["event"] == "decision"]
    calls = [e for e in decisions if e["method"] == "tools/call"]
    assert [e["decision"] for e in calls] == ["allow"] * 5 + ["deny"]
    assert len({e["call_id"] for e in decisions}) == len(decisions)  # one entry per call
    assert len(calls) == tool_calls
    front_end_writes = _metric(text, "agentwall_audit_records_total")
    if audit_from == "workers":
        assert front_end_writes < tool_calls
    else:
        assert front_end_writes >= len(decisions)
    done = verify_log(log_path)
    assert done.returncode == 0, done.stdout + done.stderr


async def _one_call(url: str) -> None:
    async with Client(url, mode="legacy") as client:
        await client.call_tool("echo", {"text": "x"})


SAMPLING_POLICY = POLICY.replace("tools:\n", "tools:\n  - name: ask_model\n    action: allow\n", 1)


async def ask_model(url: str) -> tuple[list[str], str | None, str | None, str]:
    import mcp_types as types

    asked: list[str] = []

    async def sampling(context: Any, params: types.CreateMessageRequestParams) -> Any:
        asked.append(params.messages[0].content.text)  # type: ignore[union-attr]
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="forty-two"), model="m"
        )

    async with Client(url, mode="legacy", sampling_callback=sampling) as client:
        answer: str | None = None
        failure: str | None = None
        try:
            result = await client.call_tool(
                "ask_model", {"prompt": "six times seven?"}, read_timeout_seconds=30
            )
            answer = result.content[0].text  # type: ignore[union-attr]
            if result.is_error:
                failure, answer = answer, None
        except MCPError as exc:
            failure = exc.error.message
        again = await client.call_tool("echo", {"text": "ok"})
        return asked, answer, failure, again.content[0].text  # type: ignore[union-attr]


@pytest.mark.timeout(120)
def test_server_to_client_request_passes_when_the_policy_allows_it(tmp_path: Path) -> None:
    with (
        upstream_server(tmp_path) as (upstream_url, _control),
        agentwall_start(tmp_path, upstream_url, "--workers", "1", policy=SAMPLING_POLICY) as (
            url,
            proc,
            log_path,
        ),
    ):
        asked, answer, failure, again = asyncio.run(asyncio.wait_for(ask_model(url), 90))
        assert stop(proc) == 0
    assert (asked, answer, failure, again) == (
        ["six times seven?"],
        "model said: forty-two",
        None,
        "ok",
    )
    judged = [e for e in read_log(log_path) if e.get("method") == "sampling/createMessage"]
    assert [(e["decision"], e["detail"]) for e in judged] == [("allow", {"origin": "server"})]
    assert verify_log(log_path).returncode == 0


@pytest.mark.timeout(120)
def test_a_refused_server_request_never_reaches_the_agent(tmp_path: Path) -> None:
    policy = SAMPLING_POLICY + "methods:\n  sampling/createMessage: deny\n"
    with (
        upstream_server(tmp_path) as (upstream_url, _control),
        agentwall_start(tmp_path, upstream_url, "--workers", "1", policy=policy) as (
            url,
            proc,
            log_path,
        ),
    ):
        asked, answer, failure, again = asyncio.run(asyncio.wait_for(ask_model(url), 90))
        assert stop(proc) == 0
    assert asked == []  # the agent never saw the request
    assert answer is None
    assert failure is not None
    assert "sampling/createMessage" in failure  # the server got our refusal, and did not hang
    assert again == "ok"
    judged = [e for e in read_log(log_path) if e.get("method") == "sampling/createMessage"]
    assert [(e["decision"], e["detail"]) for e in judged] == [("deny", {"origin": "server"})]
