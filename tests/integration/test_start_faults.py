"""Multi-process faults under (bounded) load: kill -9 an evaluator worker, then
the audit writer, while clients keep calling.

What must hold, whatever the timing:
- no call the policy denies ever reaches the upstream or gets a result;
- every call that got a result has an ``allow`` entry in the audit log, and
  every policy denial the client saw has its ``deny`` entry (the
  ``decision_id`` it was given): no acknowledged decision is lost;
- every request gets an answer (a result or a precise error), and the proxy
  serves normally again once the worker and the writer are back;
- the log's chain still verifies.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_start_support import agentwall_start, stop, verify_log

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from test_http_front import POLICY, call, json_answer, port_of, post, read_replies, scripted

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENTS = 6
CALLS_PER_CLIENT = 120  # bounded: 720 calls in all


def readyz(port: int) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        (reply,), _ = read_replies(sock, 1)
    decoded: dict[str, Any] = json.loads(reply[2])
    return decoded


def wait_ready(port: int, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = readyz(port)
        if state["ready"]:
            return state
        time.sleep(0.1)
    raise AssertionError(f"not ready again within {timeout}s: {state}")


def wait_progress(clients: list[Client], done: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(len(c.results) for c in clients) < done:
        if time.monotonic() > deadline or not any(c.is_alive() for c in clients):
            raise AssertionError(f"load stalled before {done} answers")
        time.sleep(0.005)


def wait_replaced(port: int, before: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Ready again, with a new writer process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = readyz(port)
        if state["ready"] and state["processes"]["audit_writer"] != before["audit_writer"]:
            processes: dict[str, Any] = state["processes"]
            return processes
        time.sleep(0.05)
    raise AssertionError(f"the writer was not replaced within {timeout}s: {readyz(port)}")


class Client(threading.Thread):
    """Alternates an allowed echo (unique text) and a denied rm_rf over one
    keep-alive connection (reconnecting if the proxy closes it)."""

    def __init__(self, port: int, index: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.index = index
        self.results: list[tuple[str, str, Any]] = []  # (kind, text, answer)
        self.failure: BaseException | None = None

    def run(self) -> None:
        sock: socket.socket | None = None
        try:
            for n in range(CALLS_PER_CLIENT):
                text = f"c{self.index}n{n}"
                denied = n % 2 == 1
                body = (
                    call("rm_rf", {"path": text}, n) if denied else call("echo", {"text": text}, n)
                )
                for _attempt in range(3):
                    if sock is None:
                        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
                    try:
                        sock.sendall(post(body))
                        replies, closed = read_replies(sock, 1, probe_close=False)
                    except OSError:
                        replies, closed = [], True
                    if closed:
                        sock.close()
                        sock = None
                    if replies:
                        status, _headers, payload = replies[0]
                        self.results.append(
                            ("deny" if denied else "allow", text, (status, json.loads(payload)))
                        )
                        break
                else:
                    raise AssertionError(f"no answer for {text}")
        except BaseException as exc:
            self.failure = exc
        finally:
            if sock is not None:
                sock.close()


@pytest.mark.timeout(300)
def test_kill_worker_then_writer_under_load(tmp_path: Path) -> None:
    with (
        scripted(json_answer) as upstream,
        agentwall_start(
            tmp_path,
            upstream.url,
            "--workers",
            "2",
            "--log-params",
            "--no-cache",  # every call goes to a worker, so the worker kill hits calls
            policy=POLICY,
        ) as (url, proc, log_path),
    ):
        port = port_of(url)
        before = wait_ready(port)["processes"]
        clients = [Client(port, i) for i in range(CLIENTS)]
        for c in clients:
            c.start()
        # Kill on progress, not on a clock: both faults land mid-load.
        total = CLIENTS * CALLS_PER_CLIENT
        wait_progress(clients, total // 4)
        os.kill(before["evaluator_workers"][0], signal.SIGKILL)
        wait_progress(clients, total // 2)
        os.kill(before["audit_writer"], signal.SIGKILL)
        at_kill = sum(len(c.results) for c in clients)
        for c in clients:
            c.join(240)
        for c in clients:
            assert c.failure is None, c.failure
        assert at_kill < total  # the writer died with calls still to come
        after = wait_replaced(port, before)
        assert before["evaluator_workers"][0] not in after["evaluator_workers"]
        assert after["audit_writer"] != before["audit_writer"]
        # Serving normally again.
        ok = Client(port, 99)
        ok.run()
        assert ok.failure is None
        assert all("result" in answer for kind, _t, (_s, answer) in ok.results if kind == "allow")
        assert stop(proc, sig=signal.SIGTERM) == 0

    results = [r for c in clients for r in c.results]
    assert len(results) == CLIENTS * CALLS_PER_CLIENT

    # 1. Nothing denied was forwarded or answered with a result.
    assert not any(b"rm_rf" in body for _req, body in upstream.seen)
    for kind, text, (_status, answer) in results:
        if kind == "deny":
            assert "result" not in answer, (text, answer)
            assert answer["error"]["code"] in (-32001, -32002), (text, answer)

    # 2. Every answered decision is in the log.
    entries = [
        json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")
    ]
    decisions = [e for e in entries if e.get("event") == "decision"]
    logged_allow = {
        e["params"]["arguments"]["text"]
        for e in decisions
        if e.get("decision") == "allow"
        and e.get("target") == "echo"
        and isinstance(e.get("params"), dict)
    }
    logged_ids = {e.get("call_id") for e in decisions}
    allowed_answers = 0
    for kind, text, (status, answer) in results:
        if kind == "allow" and "result" in answer:
            allowed_answers += 1
            assert text in logged_allow, f"{text} was answered but has no allow entry"
        if "error" in answer and answer["error"]["code"] == -32001:
            assert answer["error"]["data"]["decision_id"] in logged_ids
        if "error" in answer and answer["error"]["code"] != -32001:
            # Only the fail-closed codes: audit down, evaluator gone.
            assert answer["error"]["code"] in (-32002,), (text, answer)
            assert status == 503
    assert allowed_answers > 0

    # 3. Calls in flight on the killed worker were denied, never allowed.
    crash = [
        e for e in decisions if e.get("category") in ("evaluator_crash", "evaluator_unavailable")
    ]
    for e in crash:
        assert e["decision"] == "deny"

    # 4. The chain verifies (the writer's recovery is itself recorded).
    verified = verify_log(log_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
