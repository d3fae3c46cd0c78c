"""verify-log, report and init, run as a user runs them (a real subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentwall.audit.keys import AuditKey
from agentwall.audit.log import AuditLog
from agentwall.audit.record import decision_event
from agentwall.core.canonical import canonical_json
from agentwall.types import AuditEvent, Call, Decision

pytestmark = pytest.mark.timeout(120)

WriteLog = Callable[..., list[int]]


def agentwall(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "AGENTWALL_AUDIT_KEY"}
    full_env["AGENTWALL_AUDIT_KEY_DIR"] = "/nonexistent-agentwall-test"
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "agentwall", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        check=False,
        timeout=100,
    )


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x20]) + data[offset + 1 :]


TAMPER: dict[str, tuple[Callable[[list[bytes]], list[bytes]], str, int]] = {
    "flip a byte": (lambda ls: [*ls[:3], flip(ls[3], 40), *ls[4:]], "modified", 4),
    "delete a line": (lambda ls: ls[:3] + ls[4:], "deleted", 4),
    "swap two lines": (lambda ls: [*ls[:3], ls[4], ls[3], *ls[5:]], "reordered", 4),
    "insert a forged line": (lambda ls: [*ls[:3], flip(ls[3], 40), *ls[3:]], "inserted", 4),
    "truncate the tail": (lambda ls: ls[:-2], "truncated", 7),
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_tamper_matrix_through_the_cli(
    case: str, write_log: WriteLog, log_path: Path, key_file: Path
) -> None:
    write_log(8)
    ok = agentwall("verify-log", log_path, "--key-file", key_file)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("VALID: 8 entries")
    tamper, kind, seq = TAMPER[case]
    log_path.write_bytes(b"".join(tamper(lines(log_path))))
    bad = agentwall("verify-log", log_path, "--key-file", key_file)
    assert bad.returncode == 1
    assert bad.stdout.startswith(f"INVALID: first bad seq {seq}: {kind}:"), bad.stdout
    as_json = json.loads(
        agentwall("verify-log", log_path, "--key-file", key_file, "--format", "json").stdout
    )
    assert as_json["valid"] is False
    assert (as_json["damage"]["kind"], as_json["damage"]["seq"]) == (kind, seq)


def test_wrong_key_and_key_from_the_environment(
    write_log: WriteLog, log_path: Path, key: AuditKey, other_key: AuditKey, tmp_path: Path
) -> None:
    write_log(3)
    wrong = tmp_path / "wrong.key"
    wrong.write_text(other_key.secret.hex())
    result = agentwall("verify-log", log_path, "--key-file", wrong)
    assert result.returncode == 1
    assert "wrong_key" in result.stdout
    assert key.key_id in result.stdout
    via_env = agentwall("verify-log", log_path, env={"AGENTWALL_AUDIT_KEY": key.secret.hex()})
    assert via_env.returncode == 0, via_env.stdout + via_env.stderr


def test_torn_tail_passes_with_a_note_unless_strict(
    write_log: WriteLog, log_path: Path, key_file: Path
) -> None:
    write_log(3)
    with log_path.open("ab") as f:
        f.write(b'{"decision":"allow","ev')
    result = agentwall("verify-log", log_path, "--key-file", key_file)
    assert result.returncode == 0
    assert "note: torn_tail" in result.stdout
    assert agentwall("verify-log", log_path, "--key-file", key_file, "--strict").returncode == 1


def test_restart_between_runs_is_one_chain_and_damage_across_it_is_caught(
    write_log: WriteLog, log_path: Path, key_file: Path
) -> None:
    write_log(3)
    write_log(3)
    assert agentwall("verify-log", log_path, "--key-file", key_file).returncode == 0
    rows = lines(log_path)
    log_path.write_bytes(b"".join(rows[:3] + rows[4:]))  # the first entry of run 2
    result = agentwall("verify-log", log_path, "--key-file", key_file)
    assert result.returncode == 1
    assert "first bad seq 4: deleted" in result.stdout


def test_missing_head_is_invalid_unless_waived(
    write_log: WriteLog, log_path: Path, key_file: Path
) -> None:
    write_log(3)
    Path(f"{log_path}.head").unlink()
    result = agentwall("verify-log", log_path, "--key-file", key_file)
    assert result.returncode == 1
    assert "head_missing" in result.stdout
    assert agentwall("verify-log", log_path, "--key-file", key_file, "--no-head").returncode == 0


def test_unusable_input_exits_2(tmp_path: Path, key_file: Path) -> None:
    missing = agentwall("verify-log", tmp_path / "nope.log", "--key-file", key_file)
    assert missing.returncode == 2
    assert "no such audit log" in missing.stderr
    log = tmp_path / "x.log"
    log.write_text("hello\n")
    no_key = agentwall("verify-log", log)
    assert no_key.returncode == 2
    assert "no audit key" in no_key.stderr
    short = tmp_path / "short.key"
    short.write_text("abcd")
    assert agentwall("verify-log", log, "--key-file", short).returncode == 2


def test_rotated_set_verifies_given_the_active_name(
    log_path: Path, key: AuditKey, key_file: Path, make_event: Callable[..., AuditEvent]
) -> None:
    with AuditLog.open(log_path, key, max_bytes=1500) as log:
        for i in range(20):
            log.append_batch([make_event(i)])
    result = agentwall("verify-log", log_path, "--key-file", key_file)
    assert result.returncode == 0, result.stdout
    assert "file(s)" in result.stdout
    assert " 1 file(s)" not in result.stdout


# --- report and init -----------------------------------------------------------------------


def _call(i: int, method: str, target: str, params: Any, session: str) -> Call:
    return Call(
        call_id=f"c{i}",
        session=session,
        transport="http",
        origin="client",
        kind="request",
        rpc_id=i,
        method=method,
        target=target,
        params=params,
        params_json=canonical_json(params),
    )


def _decision(verdict: str, rule: str | None, reason: str = "ok") -> Decision:
    return Decision(
        call_id="-",
        verdict=verdict,
        rule_id=rule,
        reason=reason,  # type: ignore[arg-type]
        pointer=None,
        policy_hash="ab" * 32,
    )


AGENT_RUN: list[tuple[str, str, dict[str, Any], str, str | None]] = [
    (
        "tools/call",
        "read_file",
        {"name": "read_file", "arguments": {"path": "/workspace/a.txt"}},
        "allow",
        "tools[read_file]",
    ),
    (
        "tools/call",
        "read_file",
        {"name": "read_file", "arguments": {"path": "/workspace/src/b.py", "limit": 10}},
        "allow",
        "tools[read_file]",
    ),
    (
        "tools/call",
        "read_file",
        {"name": "read_file", "arguments": {"path": "/home/u/.ssh/id_rsa"}},
        "deny",
        "safe_mode.sensitive_path.ssh",
    ),
    (
        "tools/call",
        "list_dir",
        {"name": "list_dir", "arguments": {"path": "/workspace"}},
        "allow",
        None,
    ),
    (
        "tools/call",
        "fetch",
        {
            "name": "fetch",
            "arguments": {"url": "https://api.example.com/v1/items?page=2", "retries": 3},
        },
        "allow",
        None,
    ),
    (
        "tools/call",
        "fetch",
        {
            "name": "fetch",
            "arguments": {
                "url": "https://api.example.com/v1/items",
                "retries": 0,
                "token": "ghp_" + "a1B2" * 9,
            },
        },
        "allow",
        None,
    ),
    # varied per round by _write_agent_log
    ("tools/call", "search", {"name": "search", "arguments": {}}, "allow", None),
    (
        "resources/read",
        "file:///workspace/notes.md",
        {"uri": "file:///workspace/notes.md"},
        "allow",
        "resources[0]",
    ),
    (
        "prompts/get",
        "summarize",
        {"name": "summarize", "arguments": {"style": "short"}},
        "allow",
        None,
    ),
    ("custom/ping-ish", "", {"x": 1}, "allow", None),
    ("tools/list", "", {}, "allow", "builtin.methods[tools/list]"),
]


def _write_agent_log(
    log_path: Path, key: AuditKey, *, log_params: bool = True, dry_run: bool = False
) -> None:
    events: list[AuditEvent] = [
        AuditEvent(event="proxy_start"),
        AuditEvent(event="policy_loaded", policy_hash="ab" * 32),
    ]
    if dry_run:
        events.append(AuditEvent(event="dry_run_active"))
    for n in range(30):
        for i, (method, target, params, verdict, rule) in enumerate(AGENT_RUN):
            if method == "tools/call" and target == "search":
                params = {
                    "name": "search",
                    "arguments": {
                        "query": f"question {n}",
                        "k": n % 12,
                        "exact": n % 2 == 0,
                        "weights": [0.5, n],
                    },
                }
            reason = "reads an SSH key" if verdict == "deny" else "allowed"
            events.append(
                decision_event(
                    _call(n * 100 + i, method, target, params, f"s{n % 3}"),
                    _decision(verdict, rule, reason),
                    latency_us=100 + n * 7 + i,
                    log_params=log_params,
                    dry_run=dry_run,
                )
            )
    events.append(AuditEvent(event="proxy_stop"))
    with AuditLog.open(log_path, key) as log:
        log.append_batch(events)


def test_report_text_and_json(log_path: Path, key: AuditKey, key_file: Path) -> None:
    _write_agent_log(log_path, key)
    text = agentwall("report", log_path, "--key-file", key_file)
    assert text.returncode == 0, text.stderr
    assert "chain     valid" in text.stdout
    assert "decisions 330 total, 300 allowed, 30 denied" in text.stdout
    data = json.loads(
        agentwall(
            "report",
            log_path,
            "--format",
            "json",
            "--key-file",
            key_file,
            "--report-include-params",
        ).stdout
    )
    assert data["chain"] == "valid"
    assert data["decisions"]["deny"] == 30
    assert data["dry_run_active"] is False
    assert data["per_tool"]["read_file"] == {
        "total": 90,
        "allow": 60,
        "deny": 30,
        "dry_run_deny": 0,
        "error": 0,
        "other": 0,
    }
    assert set(data["per_session"]) == {"s0", "s1", "s2"}
    incident = data["denied"][0]
    assert incident["rule_id"] == "safe_mode.sensitive_path.ssh"
    assert incident["reason"] == "reads an SSH key"
    assert incident["params"]["arguments"]["path"] == "/home/u/.ssh/id_rsa"
    lat = data["latency"]
    assert lat["count"] == 330
    assert lat["p50_us"] <= lat["p95_us"] <= lat["p99_us"]
    assert [p["hash"] for p in data["policy_hashes"]] == ["ab" * 32]
    assert data["lifecycle"]["proxy_starts"] == 1
    assert data["lifecycle"]["proxy_stops"] == 1
    without = json.loads(agentwall("report", log_path, "--format", "json").stdout)
    assert without["chain"].startswith("not checked")
    assert "params" not in without["denied"][0]


def test_report_says_dry_run_and_a_broken_chain(
    log_path: Path, key: AuditKey, key_file: Path
) -> None:
    _write_agent_log(log_path, key, dry_run=True)
    rows = lines(log_path)
    log_path.write_bytes(b"".join(rows[:10] + rows[11:]))
    data = json.loads(
        agentwall("report", log_path, "--format", "json", "--key-file", key_file).stdout
    )
    assert data["dry_run_active"] is True
    assert data["decisions"]["dry_run_deny"] > 0
    assert data["chain"].startswith("INVALID: deleted at seq 11")


def test_init_round_trip_allows_every_call_of_its_log(
    log_path: Path, key: AuditKey, tmp_path: Path
) -> None:
    _write_agent_log(log_path, key)
    policy = tmp_path / "policy.yaml"
    made = agentwall("init", "--from-log", log_path, "--output", policy)
    assert made.returncode == 0, made.stderr
    text = policy.read_text()
    assert "default_action: deny" in text
    assert "# DECIDE:" in text
    assert 'within: ["/workspace"]' in text
    replay = agentwall("test", "--policy", policy, log_path, "--format", "json")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    cases = json.loads(replay.stdout)["cases"]
    assert len(cases) == 330
    for case in cases:
        if case.get("logged") == "deny":  # Safe Mode: never overridden by a policy
            assert case["verdict"] == "deny"
            assert case["rule_id"].startswith(("safe_mode.", "tools[read_file].parameters"))
        else:
            assert case["verdict"] == "allow", case
    # It is tight: what the agent did not do is denied.
    probes = tmp_path / "probes.json"
    probes.write_text(
        json.dumps(
            [
                {"tool": "read_file", "arguments": {"path": "/etc/passwd"}, "expect": "deny"},
                {
                    "tool": "read_file",
                    "arguments": {"path": "/workspace/../etc/x"},
                    "expect": "deny",
                },
                {
                    "tool": "read_file",
                    "arguments": {"path": "/workspace/c.txt", "mode": "w"},
                    "expect": "deny",
                },
                {
                    "tool": "delete_file",
                    "arguments": {"path": "/workspace/a.txt"},
                    "expect": "deny",
                },
                {
                    "tool": "fetch",
                    "arguments": {"url": "https://evil.example.net/x", "retries": 1},
                    "expect": "deny",
                },
                {
                    "tool": "read_file",
                    "arguments": {"path": "/workspace/new/c.txt"},
                    "expect": "allow",
                },
                {"method": "custom/other", "params": {}, "expect": "deny"},
            ]
        )
    )
    tight = agentwall("test", "--policy", policy, probes)
    assert tight.returncode == 0, tight.stdout


def test_init_without_params_and_refusing_to_overwrite(
    log_path: Path, key: AuditKey, tmp_path: Path
) -> None:
    _write_agent_log(log_path, key, log_params=False)
    policy = tmp_path / "policy.yaml"
    policy.write_text("keep me\n")
    refused = agentwall("init", "--from-log", log_path, "--output", policy)
    assert refused.returncode == 2
    assert "--force" in refused.stderr
    assert policy.read_text() == "keep me\n"
    forced = agentwall("init", "--from-log", log_path, "--output", policy, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "parameters were not logged" in policy.read_text()
    assert "any arguments allowed" in forced.stderr
    # Without params nothing can be replayed, but the policy loads and names the tools.
    summary = agentwall("test", "--policy", policy, "--format", "json")
    assert summary.returncode == 0
    assert sorted(json.loads(summary.stdout)["tools"]["allow"]) == [
        "fetch",
        "list_dir",
        "read_file",
        "search",
    ]
