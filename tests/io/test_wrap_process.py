"""``agentwall wrap`` process plumbing on real processes: kill modes, signals,
shutdown, crashes, exit codes, failed starts.  Each test asserts who is still
alive afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_wrap_servers import HERE, Host, alive, wait_dead, wait_file, wait_server, wrap_argv

from agentwall.audit.keys import read_key_file
from agentwall.audit.verify import verify_files
from agentwall.errors import POLICY_DENIED, UPSTREAM_UNAVAILABLE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def start(tmp: Path, *extra: str, mode: str = "plain", **env: str) -> tuple[Host, dict[str, Any]]:
    info = tmp / f"server-{time.monotonic_ns()}.json"
    environ = {**os.environ, "WRAP_TEST_INFO": str(info), **env}
    host = Host(
        wrap_argv(tmp, *extra, server=[sys.executable, HERE, "raw", mode]), env=environ, cwd=tmp
    )
    return host, wait_server(host, info)


def entries(tmp: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp / "audit.log").read_text().splitlines()]


def assert_log_verifies(tmp: Path) -> None:
    outcome = verify_files([tmp / "audit.log"], [read_key_file(tmp / "audit.key")])
    assert outcome.valid, outcome.report


@pytest.fixture
def agent() -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in agent process for ``--agent-pid``; always reaped, even when
    the test fails before its own cleanup (a leaked Popen fails a later,
    unrelated test with a ResourceWarning)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_plumbing_env_cwd_and_exit_code_on_stdin_close(tmp_path: Path) -> None:
    host, server = start(tmp_path, WRAP_TEST_MARKER="passed-through")
    try:
        assert server["marker"] == "passed-through"
        assert Path(server["cwd"]) == tmp_path
        # The server runs in its own process group, not ours or wrap's.
        assert server["pgid"] == server["pid"]
        host.initialize()
        host.call(1, "echo", {"x": 1})
        assert host.recv()["id"] == 1
        host.close_stdin()
        assert host.wait() == 0
        assert wait_dead(server["pid"])
    finally:
        host.kill()
    log = entries(tmp_path)
    assert log[-1]["event"] == "proxy_stop"
    assert log[-1]["detail"]["exit_status"] == 0
    assert_log_verifies(tmp_path)


def test_kill_mode_none_keeps_the_session(tmp_path: Path) -> None:
    host, server = start(tmp_path)
    try:
        host.initialize()
        host.call(1, "run_command", {"command": "ls"})
        denied = host.recv()
        assert denied["error"]["code"] == POLICY_DENIED
        host.call(2, "echo", {})
        assert host.recv()["id"] == 2
        assert alive(server["pid"])
        assert host.proc.poll() is None
        host.close_stdin()
        assert host.wait() == 0
    finally:
        host.kill()


def test_kill_mode_connection_ends_the_session(
    tmp_path: Path, agent: subprocess.Popen[bytes]
) -> None:
    host, server = start(tmp_path, "--kill-mode", "connection", "--agent-pid", str(agent.pid))
    try:
        host.initialize()
        host.call(1, "run_command", {"command": "ls"})
        assert host.recv()["error"]["code"] == POLICY_DENIED
        assert host.wait() == 1
        assert wait_dead(server["pid"])
        # connection mode never touches the agent.
        assert alive(agent.pid)
    finally:
        host.kill()
    assert "kill-mode connection" in entries(tmp_path)[-1]["reason"]
    assert_log_verifies(tmp_path)


def test_kill_mode_process_kills_the_agent_pid_and_the_session_goes_on(
    tmp_path: Path, agent: subprocess.Popen[bytes]
) -> None:
    host, server = start(tmp_path, "--kill-mode", "process", "--agent-pid", str(agent.pid))
    try:
        host.initialize()
        host.call(1, "run_command", {"command": "ls"})
        assert host.recv()["error"]["code"] == POLICY_DENIED
        assert agent.wait(timeout=60) == -signal.SIGKILL
        # Only the agent was killed: wrap and the server still serve.
        host.call(2, "echo", {})
        assert host.recv()["id"] == 2
        assert alive(server["pid"])
        host.close_stdin()
        assert host.wait() == 0
        assert wait_dead(server["pid"])
    finally:
        host.kill()
    kills = [e for e in entries(tmp_path) if (e.get("detail") or {}).get("action") == "kill"]
    assert kills[0]["detail"]["ok"] is True
    assert kills[0]["detail"]["pid"] == agent.pid


def test_kill_mode_both_kills_the_agent_and_ends_the_session(
    tmp_path: Path, agent: subprocess.Popen[bytes]
) -> None:
    host, server = start(tmp_path, "--kill-mode", "both", "--agent-pid", str(agent.pid))
    try:
        host.initialize()
        host.call(1, "run_command", {"command": "ls"})
        assert host.recv()["error"]["code"] == POLICY_DENIED
        assert agent.wait(timeout=60) == -signal.SIGKILL
        assert host.wait() == 1
        assert wait_dead(server["pid"])
    finally:
        host.kill()


# The agent host launches wrap itself; kill mode process (no --agent-pid)
# kills that parent.  Wrap then sees stdin EOF and stops the server.
AGENT = """
import json, subprocess, sys, time
argv = json.loads(sys.argv[1])
wrap = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
open(sys.argv[2], "w").write(str(wrap.pid))
def send(message):
    wrap.stdin.write(json.dumps(message).encode() + b"\\n")
    wrap.stdin.flush()
send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion":
      "2025-06-18", "capabilities": {}, "clientInfo": {"name": "a", "version": "1"}}})
# As a real host does, wait for the answer: the server is then up (and has
# written its pid file) before the denial that gets us killed.
wrap.stdout.readline()
send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
      "params": {"name": "run_command", "arguments": {"command": "ls"}}})
time.sleep(120)
"""


def test_kill_mode_process_defaults_to_the_parent(tmp_path: Path) -> None:
    info = tmp_path / "server.json"
    wrap_pid_file = tmp_path / "wrap.pid"
    argv = wrap_argv(tmp_path, "--kill-mode", "process", server=[sys.executable, HERE, "raw", "x"])
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, json.dumps(argv), str(wrap_pid_file)],
        env={**os.environ, "WRAP_TEST_INFO": str(info)},
    )
    try:
        server = wait_file(info)
        assert agent.wait(timeout=60) == -signal.SIGKILL
        wrap_pid = int(wrap_pid_file.read_text())
        # With its host gone, wrap shuts the server down and exits: no orphans.
        assert wait_dead(server["pid"])
        assert wait_dead(wrap_pid)
    finally:
        if agent.poll() is None:
            agent.kill()
        agent.wait()
    log = entries(tmp_path)
    assert log[-1]["event"] == "proxy_stop"
    assert_log_verifies(tmp_path)


def test_sigterm_is_forwarded_and_the_status_propagates(tmp_path: Path) -> None:
    host, server = start(tmp_path)
    try:
        host.initialize()
        host.proc.send_signal(signal.SIGTERM)
        assert host.wait() == 128 + signal.SIGTERM
        assert wait_dead(server["pid"])
    finally:
        host.kill()
    assert b"received SIGTERM" in host.stderr


def test_sigint_is_forwarded(tmp_path: Path) -> None:
    host, server = start(tmp_path)
    try:
        host.initialize()
        host.proc.send_signal(signal.SIGINT)
        # Python re-raises an unhandled KeyboardInterrupt as death by SIGINT.
        assert host.wait() == 128 + signal.SIGINT
        assert wait_dead(server["pid"])
    finally:
        host.kill()


def test_a_server_ignoring_eof_and_sigterm_gets_sigkill(tmp_path: Path) -> None:
    host, server = start(tmp_path, "--grace-period", "1", mode="ignore-term")
    try:
        host.initialize()
        host.close_stdin()
        assert host.wait() == 128 + signal.SIGKILL
        assert wait_dead(server["pid"])
    finally:
        host.kill()
    assert b"sending SIGKILL" in host.stderr
    assert_log_verifies(tmp_path)


def test_crash_mid_call_answers_every_pending_request(tmp_path: Path) -> None:
    host, server = start(tmp_path)
    try:
        host.initialize()
        # Both reach the server's pipe; it dies reading the first.
        host.send_raw(
            b"".join(
                json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": rpc_id,
                        "method": "tools/call",
                        "params": {"name": name, "arguments": {}},
                    }
                ).encode()
                + b"\n"
                for rpc_id, name in ((10, "crash"), ("eleven", "echo"))
            )
        )
        replies = [host.recv(), host.recv()]
        assert host.wait() == 3
        assert wait_dead(server["pid"])
    finally:
        host.kill()
    assert sorted(str(r["id"]) for r in replies) == ["10", "eleven"]
    for reply in replies:
        assert reply["error"]["code"] == UPSTREAM_UNAVAILABLE
        # A request written after the server died meets a closed pipe (it is
        # refused as undelivered); one already in its pipe is answered when
        # the exit is seen.  Which one happens is a race, both are true.
        message = reply["error"]["message"]
        assert "exited (status 3)" in message or "closed its input" in message, message
    log = entries(tmp_path)
    reasons = [e.get("reason") or "" for e in log]
    unanswered = sum(
        int(r.split(" request(s) unanswered")[0].rsplit(" ", 1)[1])
        for r in reasons
        if "request(s) unanswered" in r
    )
    undelivered = sum("request not delivered" in r for r in reasons)
    assert unanswered + undelivered == 2, reasons
    assert_log_verifies(tmp_path)


def test_a_server_that_fails_to_start_is_explained(tmp_path: Path) -> None:
    host, _ = start_no_info(tmp_path, "fail-start")
    try:
        # The host does not close stdin: the server dies on its own.
        assert host.wait() == 3
    finally:
        host.kill()
    err = bytes(host.stderr).decode()
    assert "exited with status 3 before sending any message" in err
    assert "cannot open the database" in err


def start_no_info(tmp: Path, mode: str) -> tuple[Host, None]:
    return Host(wrap_argv(tmp, server=[sys.executable, HERE, "raw", mode])), None


def test_a_command_that_does_not_exist(tmp_path: Path) -> None:
    host = Host(wrap_argv(tmp_path, server=[str(tmp_path / "no-such-server")]))
    try:
        assert host.wait() == 127
    finally:
        host.kill()
    assert b"cannot start the MCP server" in host.stderr
    assert_log_verifies(tmp_path)


def test_command_string_form(tmp_path: Path) -> None:
    argv = wrap_argv(tmp_path, server=[])
    argv = [*argv[: argv.index("--")], "--command", f"{sys.executable} '{HERE}' raw plain"]
    host = Host(argv)
    try:
        host.initialize()
        host.call(1, "echo", {"a": "b"})
        assert host.recv()["id"] == 1
        host.close_stdin()
        assert host.wait() == 0
    finally:
        host.kill()


def test_sighup_reloads_the_policy_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    host, _ = start(tmp_path)
    try:
        host.initialize()
        host.call(1, "echo", {})
        assert "result" in host.recv()
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            policy.read_text().replace("{name: echo, action: allow}", "{name: echo, action: deny}")
        )
        host.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while b"policy reloaded" not in host.stderr and time.monotonic() < deadline:
            time.sleep(0.05)
        host.call(2, "echo", {})
        assert host.recv()["error"]["code"] == POLICY_DENIED
        policy.write_text("version: '2'\ntools: [oops\n")
        host.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while b"policy reload failed" not in host.stderr and time.monotonic() < deadline:
            time.sleep(0.05)
        # The running (second) policy stays.
        host.call(3, "echo", {})
        assert host.recv()["error"]["code"] == POLICY_DENIED
        host.close_stdin()
        assert host.wait() == 0
    finally:
        host.kill()
    kinds = [e["event"] for e in entries(tmp_path)]
    assert "policy_loaded" in kinds
    assert "policy_reload_failed" in kinds
    assert_log_verifies(tmp_path)


def test_log_params_masks_secrets(tmp_path: Path) -> None:
    host, _ = start(tmp_path, "--log-params")
    secret = "ghp_" + "a1B2" * 9
    try:
        host.initialize()
        host.call(1, "echo", {"text": f"token {secret}"})
        # Safe Mode refuses a secret leaving in the arguments...
        assert host.recv()["error"]["code"] == POLICY_DENIED
        host.close_stdin()
        assert host.wait() == 0
    finally:
        host.kill()
    # ...and the logged parameters never contain it.
    text = (tmp_path / "audit.log").read_text()
    assert secret not in text
    call = next(e for e in entries(tmp_path) if e.get("target") == "echo")
    assert call["params"]["arguments"]["text"] == "token [MASKED:github]"
    assert call["masked"] == ["/arguments/text"]


def test_log_max_bytes_rotates_and_the_chain_spans_the_files(tmp_path: Path) -> None:
    host, _ = start(tmp_path, "--log-max-bytes", "2000")
    try:
        host.initialize()
        for i in range(12):
            host.call(i + 1, "echo", {"text": f"call {i}"})
            assert "result" in host.recv()
        host.close_stdin()
        assert host.wait() == 0
    finally:
        host.kill()
    rotated = sorted(tmp_path.glob("audit.log.[0-9]*"))
    assert len(rotated) >= 3  # every file closes once it reaches 2000 bytes
    assert all(p.stat().st_size < 2000 + 2048 for p in rotated)
    active = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert active[0]["event"] == "log_rotated"
    files = [*rotated, tmp_path / "audit.log"]
    outcome = verify_files(files, [read_key_file(tmp_path / "audit.key")])
    assert outcome.valid, outcome.report
    assert outcome.report.entries > 12


def test_log_max_bytes_must_be_positive(tmp_path: Path) -> None:
    done = subprocess.run(
        wrap_argv(tmp_path, "--log-max-bytes", "0"), capture_output=True, timeout=60
    )
    assert done.returncode == 2
    assert b"--log-max-bytes must be positive" in done.stderr
    assert not (tmp_path / "audit.log").exists()


def test_agentwall_test_replays_a_wrap_log_with_each_messages_origin(tmp_path: Path) -> None:
    """``agentwall test --policy P LOG`` re-judges logged calls; a message the
    server sent (logged with ``detail.origin = "server"``) must be judged as
    the server's, or every sampling request would replay as a client's."""
    host, _ = start(tmp_path, "--log-params")
    try:
        host.initialize()
        host.call(1, "ask", {})
        asked = host.recv()
        assert asked["method"] == "sampling/createMessage"
        assert "result" in host.recv()
        host.call(2, "run_command", {"command": "ls"})
        assert host.recv()["error"]["code"] == POLICY_DENIED
        host.close_stdin()
        assert host.wait() == 0
    finally:
        host.kill()
    # Messages without params (notifications/initialized) cannot be replayed.
    logged = [e for e in entries(tmp_path) if e.get("event") == "decision" and "params" in e]
    sampling = next(e for e in logged if e["method"] == "sampling/createMessage")
    assert sampling["detail"] == {"origin": "server"}
    assert sampling["decision"] == "allow"
    done = subprocess.run(
        [sys.executable, "-m", "agentwall", "test", "--policy", str(tmp_path / "policy.yaml"),
         str(tmp_path / "audit.log"), "--format", "json"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    cases = json.loads(done.stdout)["cases"]
    assert len(cases) == len(logged)
    assert [c["verdict"] for c in cases] == [e["decision"] for e in logged]
    assert any(c["method"] == "sampling/createMessage" for c in cases)
