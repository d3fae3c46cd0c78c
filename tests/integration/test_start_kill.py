"""Kill modes with real processes: the agent is a separate Python process that
talks to a real ``agentwall start`` over loopback TCP."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_start_support import agentwall_start, stop
from test_start_support import free_port as _free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from test_http_front import POLICY, call, json_answer, port_of, post, raw, rpc, scripted

pytestmark = [pytest.mark.integration]

# The agent: connect, send one denied call, report what it read, then wait to
# be killed (or for the connection to close).
AGENT = textwrap.dedent(
    """
    import json, socket, sys, time
    port = int(sys.argv[1])
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "rm_rf", "arguments": {}}}).encode()
    head = (f"POST /mcp HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nContent-Type: application/json\\r\\n"
            f"Content-Length: {len(body)}\\r\\n\\r\\n").encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(head + body)
    print("sent", flush=True)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    print("closed", len(data), flush=True)
    time.sleep(30)
    """
)


def log_events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def kill_entries(path: Path) -> list[dict[str, object]]:
    return [
        e
        for e in log_events(path)
        if isinstance(e.get("detail"), dict) and e["detail"].get("action") == "kill"
    ]  # type: ignore[union-attr]


@pytest.mark.timeout(120)
def test_kill_mode_process_finds_the_loopback_peer_and_kills_it(tmp_path: Path) -> None:
    with (
        scripted(json_answer) as up,
        agentwall_start(
            tmp_path, up.url, "--workers", "0", "--kill-mode", "process", policy=POLICY
        ) as (
            url,
            proc,
            log_path,
        ),
    ):
        agent = subprocess.Popen(
            [sys.executable, "-c", AGENT, str(port_of(url))], stdout=subprocess.PIPE, text=True
        )
        try:
            code = agent.wait(60)
        finally:
            if agent.poll() is None:
                agent.kill()
            if agent.stdout:
                agent.stdout.close()
        assert stop(proc) == 0
    assert code == -9
    (entry,) = kill_entries(log_path)
    assert entry["detail"]["ok"] is True  # type: ignore[index]
    assert entry["detail"]["pid"] == agent.pid  # type: ignore[index]
    assert "owner of the peer socket" in str(entry["reason"])
    assert not any(b"rm_rf" in body for _, body in up.seen)


@pytest.mark.timeout(120)
def test_kill_mode_process_with_agent_pid(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with (
            scripted(json_answer) as up,
            agentwall_start(
                tmp_path,
                up.url,
                "--workers",
                "0",
                "--kill-mode",
                "process",
                "--agent-pid",
                str(sleeper.pid),
                policy=POLICY,
            ) as (url, _proc, _log),
        ):
            (reply,), closed = raw(port_of(url), post(call("rm_rf", {}, 3)))
            assert rpc(reply)["error"]["code"] == -32001
            assert not closed  # process mode alone keeps the connection
            assert sleeper.wait(30) == -9
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


@pytest.mark.timeout(120)
def test_kill_mode_connection_answers_then_closes(tmp_path: Path) -> None:
    with (
        scripted(json_answer) as up,
        agentwall_start(
            tmp_path, up.url, "--workers", "0", "--kill-mode", "connection", policy=POLICY
        ) as (
            url,
            _proc,
            _log,
        ),
    ):
        port = port_of(url)
        (reply,), closed = raw(port, post(call("rm_rf", {}, 4)))
        assert reply[0] == 200
        assert reply[1]["connection"] == "close"
        assert rpc(reply)["error"]["code"] == -32001
        assert closed
        # An allowed call on a new connection is untouched.
        (ok,), closed = raw(port, post(call("echo", {"text": "x"}, 5)))
        assert rpc(ok)["id"] == 5
        assert not closed


@pytest.mark.timeout(120)
def test_kill_mode_both_falls_back_to_connection_and_says_why(tmp_path: Path) -> None:
    missing = tmp_path / "no-such.pid"
    with (
        scripted(json_answer) as up,
        agentwall_start(
            tmp_path,
            up.url,
            "--workers",
            "0",
            "--kill-mode",
            "both",
            "--agent-pid-file",
            str(missing),
            policy=POLICY,
        ) as (url, proc, log_path),
    ):
        (reply,), closed = raw(port_of(url), post(call("rm_rf", {}, 6)))
        assert rpc(reply)["error"]["code"] == -32001
        assert closed
        assert stop(proc) == 0
    (entry,) = kill_entries(log_path)
    assert entry["detail"]["ok"] is False  # type: ignore[index]
    assert "cannot read --agent-pid-file" in str(entry["reason"])
    assert "fell back to closing the connection" in str(entry["reason"])


@pytest.mark.timeout(60)
def test_kill_mode_is_off_in_dry_run(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with (
            scripted(json_answer) as up,
            agentwall_start(
                tmp_path,
                up.url,
                "--workers",
                "0",
                "--dry-run",
                "--kill-mode",
                "both",
                "--agent-pid",
                str(sleeper.pid),
                policy=POLICY,
            ) as (url, _proc, _log),
        ):
            (reply,), closed = raw(port_of(url), post(call("rm_rf", {}, 7)))
            assert rpc(reply)["result"]["echo"]["name"] == "rm_rf"  # forwarded
            assert not closed
            assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_free_port_helper_is_usable() -> None:
    assert 0 < _free_port() < 65536
