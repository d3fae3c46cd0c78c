"""Hostile framing through ``agentwall wrap``, on real pipes: an oversize line
from either side, a partial line at EOF, garbage interleaved with messages,
a server flooding its stdout.  Nothing invalid reaches the other side, and
wrap's memory stays bounded."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_wrap_servers import HERE, Host, wait_dead, wait_server, wrap_argv

from agentwall.audit.keys import read_key_file
from agentwall.audit.verify import verify_files
from agentwall.errors import INVALID_REQUEST, PARSE_ERROR, UPSTREAM_UNAVAILABLE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MAX_LINE = 64 * 1024


def start(tmp: Path, mode: str = "plain", *extra: str) -> tuple[Host, dict[str, Any]]:
    info = tmp / f"server-{time.monotonic_ns()}.json"
    host = Host(
        wrap_argv(tmp, "--max-line", str(MAX_LINE), *extra,
                  server=[sys.executable, HERE, "raw", mode]),
        env={**os.environ, "WRAP_TEST_INFO": str(info)},
    )  # fmt: skip
    return host, wait_server(host, info)


def assert_log_verifies(tmp: Path) -> None:
    outcome = verify_files([tmp / "audit.log"], [read_key_file(tmp / "audit.key")])
    assert outcome.valid, outcome.report


def finish(host: Host, status: int = 0) -> None:
    host.close_stdin()
    assert host.wait() == status


def test_oversize_line_from_the_host(tmp_path: Path) -> None:
    host, server = start(tmp_path)
    try:
        host.initialize()
        huge = {
            "jsonrpc": "2.0",
            "id": "too-big",
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x" * (MAX_LINE * 3)}},
        }
        host.send(huge)
        reply = host.recv()
        # The id is read from the line's first bytes so the host is answered.
        assert reply["id"] == "too-big"
        assert reply["error"]["code"] == INVALID_REQUEST
        assert "longer than" in reply["error"]["message"]
        host.call(2, "echo", {"text": "small"})
        assert host.recv()["id"] == 2
        finish(host)
        assert wait_dead(server["pid"])
    finally:
        host.kill()
    assert_log_verifies(tmp_path)


def test_invalid_json_and_ambiguous_messages_from_the_host(tmp_path: Path) -> None:
    host, _ = start(tmp_path)
    try:
        host.initialize()
        host.send_raw(b"{not json}\n")
        reply = host.recv()
        assert (reply["id"], reply["error"]["code"]) == (None, PARSE_ERROR)
        host.send_raw(
            b'{"jsonrpc":"2.0","id":5,"method":"tools/call",'
            b'"params":{"name":"echo","name":"run_command","arguments":{}}}\n'
        )
        reply = host.recv()
        assert (reply["id"], reply["error"]["code"]) == (5, INVALID_REQUEST)
        assert "duplicate" in reply["error"]["message"]
        host.call(6, "echo", {})
        assert host.recv()["id"] == 6
        finish(host)
    finally:
        host.kill()


def test_partial_line_at_eof_from_the_host(tmp_path: Path) -> None:
    host, _ = start(tmp_path)
    try:
        host.initialize()
        host.call(1, "echo", {"text": "complete"})
        host.send_raw(b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"na')
        host.close_stdin()
        replies = [host.recv(), host.recv()]
        assert host.wait() == 0
    finally:
        host.kill()
    by_id = {r["id"]: r for r in replies}
    assert "result" in by_id[1]
    partial = by_id[None]
    assert partial["error"]["code"] == PARSE_ERROR
    assert "ended in the middle of a message" in partial["error"]["message"]
    assert_log_verifies(tmp_path)


def test_a_complete_last_message_without_newline_is_served(tmp_path: Path) -> None:
    host, _ = start(tmp_path)
    try:
        host.initialize()
        host.send_raw(
            b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{}}}'
        )
        host.close_stdin()
        assert host.recv()["id"] == 3
        assert host.wait() == 0
    finally:
        host.kill()


def test_garbage_interleaved_by_the_server_never_reaches_the_host(tmp_path: Path) -> None:
    host, _ = start(tmp_path, "interleave")
    try:
        host.initialize()
        for i in range(1, 4):
            host.call(i, "echo", {"n": i})
            reply = host.recv()
            assert reply["id"] == i
            assert "result" in reply
        finish(host)
    finally:
        host.kill()
    # Every line the host received was one of our messages; nothing else came.
    assert host.lines.get(timeout=5) == b""
    assert b"dropped invalid output" in host.stderr
    assert_log_verifies(tmp_path)


def test_oversize_answer_from_the_server_becomes_an_error(tmp_path: Path) -> None:
    host, _ = start(tmp_path)
    try:
        host.initialize()
        host.call(7, "big", {"size": MAX_LINE * 2})
        reply = host.recv()
        assert reply["id"] == 7
        assert reply["error"]["code"] == UPSTREAM_UNAVAILABLE
        host.call(8, "big", {"size": 100})
        assert host.recv()["result"]["content"][0]["text"] == "y" * 100
        finish(host)
    finally:
        host.kill()


def test_partial_line_from_a_dying_server(tmp_path: Path) -> None:
    host, server = start(tmp_path)
    try:
        host.initialize()
        host.call(9, "exit-partial", {})
        reply = host.recv()
        assert reply["id"] == 9
        assert reply["error"]["code"] == UPSTREAM_UNAVAILABLE
        assert host.wait() == 0
        assert wait_dead(server["pid"])
    finally:
        host.kill()
    assert_log_verifies(tmp_path)


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_server_flooding_stdout_is_not_buffered(tmp_path: Path) -> None:
    """24 MiB without a newline, against a 64 KiB line limit: discarded as it
    streams, never held; wrap's peak memory stays far below the flood."""
    host, _ = start(tmp_path, "flood")
    try:
        host.initialize()
        host.call(1, "echo", {"after": "flood"})
        assert host.recv()["id"] == 1
        peak_kib = _peak_rss_kib(host.proc.pid)
        finish(host)
    finally:
        host.kill()
    assert peak_kib < 20 * 1024 + _baseline_kib(tmp_path), peak_kib
    assert b"longer than" in host.stderr


def _baseline_kib(tmp: Path) -> int:
    """Peak memory of the same session without the flood."""
    base = tmp / "baseline"
    base.mkdir()
    host, _ = start(base)
    try:
        host.initialize()
        host.call(1, "echo", {})
        host.recv()
        peak = _peak_rss_kib(host.proc.pid)
        finish(host)
    finally:
        host.kill()
    return peak


def test_batch_items_judged_one_by_one(tmp_path: Path) -> None:
    host, _ = start(tmp_path)
    try:
        host.initialize()
        batch = [
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
             "params": {"name": "echo", "arguments": {}}},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
             "params": {"name": "run_command", "arguments": {}}},
            {"jsonrpc": "2.0", "id": 3, "method": 3},
        ]  # fmt: skip
        host.send_raw(json.dumps(batch).encode() + b"\n")
        got: dict[Any, Any] = {}
        while len(got) < 3:
            line = host.lines.get(timeout=60)
            reply = json.loads(line)
            # Refusals come one by one; what was forwarded comes back as the
            # server's batch answer.
            for item in reply if isinstance(reply, list) else [reply]:
                got[item["id"]] = item
        finish(host)
    finally:
        host.kill()
    assert got[2]["error"]["code"] == -32001
    assert got[3]["error"]["code"] == INVALID_REQUEST
    assert "result" in got[1]
