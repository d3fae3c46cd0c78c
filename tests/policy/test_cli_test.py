"""``agentwall test`` exit codes and output (issue 2): 0 all expectations hold,
1 one failed, 2 unusable policy or input; validate-only without FILE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentwall.cli import main

POLICY = """\
version: "2"
default_action: deny
tools:
  - name: read_file
    action: allow
    risk: low
    parameters:
      - {name: path, type: string, required: true, within: ["/workspace"]}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY)
    return p


def _write(tmp_path: Path, name: str, content: object) -> Path:
    p = tmp_path / name
    p.write_text(content if isinstance(content, str) else json.dumps(content))
    return p


def test_validate_only_prints_a_summary(
    policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["test", "--policy", str(policy_file)]) == 0
    out = capsys.readouterr().out
    assert "policy OK" in out
    assert "1 allowed, 0 denied" in out
    assert main(["test", "--policy", str(policy_file), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tools"]["allow"] == ["read_file"]
    assert len(summary["hash"]) == 64


def test_bad_policy_exits_2_with_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write(tmp_path, "bad.yaml", POLICY.replace("    risk: low", "    rsik: low"))
    assert main(["test", "--policy", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:6:5:" in err
    assert "did you mean 'risk'" in err


def test_missing_policy_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", "--policy", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read the policy" in capsys.readouterr().err


def test_cases_one_line_each_and_exit_codes(
    policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = [
        {"tool": "read_file", "arguments": {"path": "/workspace/a"}, "expect": "allow"},
        {"tool": "read_file", "arguments": {"path": "/etc/passwd"}, "expect": "deny"},
        {"tool": "other", "arguments": {}},
        {"method": "ping"},
    ]
    f = _write(tmp_path, "cases.json", cases)
    assert main(["test", "--policy", str(policy_file), str(f)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5  # four cases and the summary
    assert "ALLOW" in lines[0]
    assert "DENY" in lines[1]
    assert "rule=tools[read_file].parameters[path].within" in lines[1]
    assert "pointer=/arguments/path" in lines[1]
    assert "rule=default_action" in lines[2]
    cases[0]["expect"] = "deny"
    f = _write(tmp_path, "cases.json", cases)
    assert main(["test", "--policy", str(policy_file), str(f)]) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "1:1"),
        ('[{"tool": "x", "tool": "y"}]', "duplicate key"),
        ('{"tool": "x"}', "no decision entries"),
        ('[{"tol": "x"}]', "did you mean 'tool'"),
        ('[{"tool": "x", "expect": "maybe"}]', "expect must be"),
        ('[{"tool": "x", "uri": "y"}]', "exactly one of"),
        ('[{"tool": "x", "params": {}}]', "params goes with method"),
        ('[{"method": "ping", "arguments": {}}]', "takes params"),
        ('[{"tool": 5}]', "must be a string"),
        ('[{"tool": "x", "identity": {"subject": 1}}]', "identity.subject"),
        ('[{"tool": "x", "arguments": NaN}]', "NaN"),
        ("[1]", "must be an object"),
    ],
)
def test_unusable_cases_exit_2(
    policy_file: Path,
    tmp_path: Path,
    content: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    f = _write(tmp_path, "cases.json", content)
    assert main(["test", "--policy", str(policy_file), str(f)]) == 2
    assert message in capsys.readouterr().err


def test_no_policy_means_safe_mode_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = _write(
        tmp_path,
        "cases.json",
        [
            {"tool": "anything", "arguments": {"p": "/home/u/.aws/credentials"}, "expect": "deny"},
            {"tool": "anything", "arguments": {"p": "hello"}, "expect": "allow"},
        ],
    )
    assert main(["test", str(f)]) == 0
    captured = capsys.readouterr()
    assert "SAFE MODE ONLY" in captured.err
    assert "safe_mode.path.cloud_credentials" in captured.out


def test_audit_log_replay(
    policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = [
        {"v": 1, "seq": 0, "event": "proxy_start"},
        {
            "v": 1,
            "seq": 1,
            "event": "decision",
            "method": "tools/call",
            "target": "read_file",
            "decision": "allow",
            "params": {"name": "read_file", "arguments": {"path": "/workspace/a"}},
        },
        {
            "v": 1,
            "seq": 2,
            "event": "decision",
            "method": "tools/call",
            "target": "read_file",
            "decision": "allow",
        },
        {
            "v": 1,
            "seq": 3,
            "event": "decision",
            "method": "tools/call",
            "target": "read_file",
            "decision": "allow",
            "params": {"name": "read_file", "arguments": {"path": "/srv/x"}},
            "masked": ["/arguments/token"],
        },
    ]
    log = _write(tmp_path, "audit.log", "\n".join(json.dumps(e) for e in entries) + "\n")
    assert main(["test", "--policy", str(policy_file), str(log)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[0] == "ALLOW"
    assert "seq 1" in lines[0]
    assert "(logged: allow)" in lines[0]
    assert lines[1].split()[0] == "DENY"
    assert "masked before logging" in lines[1]
    assert "1 of 3 decision entries have no params" in out
    assert "--log-params" in out


def test_replay_of_a_real_audit_log(
    policy_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log written by the audit part itself, with and without --log-params."""
    from agentwall.audit.keys import AuditKey
    from agentwall.audit.log import AuditLog
    from agentwall.audit.record import decision_event
    from agentwall.policy import evaluate, load_policy

    from .helpers import tool_call

    old_policy = load_policy(None)  # what the proxy ran with: Safe Mode only
    calls = [
        tool_call("read_file", {"path": "/workspace/a"}),
        tool_call("read_file", {"path": "/etc/hosts"}),
        tool_call("read_file", {"path": "/workspace/b", "token": "ghp_" + "a1B2" * 9}),
    ]
    log_path = tmp_path / "audit.log"
    with AuditLog.open(log_path, AuditKey(b"k" * 32, source="test")) as log:
        events = [
            decision_event(c, evaluate(old_policy, c, 0), latency_us=1, log_params=True)
            for c in calls
        ]
        events.append(
            decision_event(
                calls[0], evaluate(old_policy, calls[0], 0), latency_us=1, log_params=False
            )
        )
        log.append_batch(events)
    assert main(["test", "--policy", str(policy_file), str(log_path), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    got = [(c["verdict"], c.get("logged")) for c in out["cases"]]
    # New policy: /etc/hosts is outside /workspace, and an undeclared argument
    # is denied even though its secret was masked before logging.
    assert got == [("allow", "allow"), ("deny", "allow"), ("deny", "deny")]
    assert out["cases"][2]["masked"] == ["/arguments/token"]
    assert out["cases"][2]["rule_id"] == "tools[read_file].additional_parameters"
    assert any("1 of 4 decision entries have no params" in n for n in out["notes"])
