"""Every shipped example policy loads and passes its own fixture, run through
``agentwall test`` exactly as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentwall.cli import main
from agentwall.policy import load_policy

POLICIES = Path(__file__).resolve().parents[2] / "policies"
EXAMPLES = sorted(p.parent for p in POLICIES.glob("*/policy.yaml"))


def test_the_expected_families_are_shipped() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"filesystem", "shell", "git", "database", "web_fetch"} <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_passes_its_cases(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "test",
            "--policy",
            str(example / "policy.yaml"),
            str(example / "cases.json"),
            "--format",
            "json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    failed = [c for c in out["cases"] if not c["ok"]]
    assert failed == []
    assert code == 0
    cases = out["cases"]
    # A fixture that cannot fail proves nothing: each must expect both outcomes.
    assert all(c["expect"] in ("allow", "deny") for c in cases)
    assert {c["verdict"] for c in cases} == {"allow", "deny"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_is_deny_by_default_with_risks(example: Path) -> None:
    policy = load_policy(example / "policy.yaml")
    assert policy.default_action == "deny"
    assert all(t.risk is not None for t in policy.tools)
    assert policy.session_rate is not None


def test_flipping_an_expectation_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = POLICIES / "filesystem"
    cases = json.loads((example / "cases.json").read_text())
    cases[0]["expect"] = "deny" if cases[0]["expect"] == "allow" else "allow"
    flipped = tmp_path / "cases.json"
    flipped.write_text(json.dumps(cases))
    assert main(["test", "--policy", str(example / "policy.yaml"), str(flipped)]) == 1
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.timeout(60)
def test_console_script_end_to_end() -> None:
    example = POLICIES / "web_fetch"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentwall",
            "test",
            "--policy",
            str(example / "policy.yaml"),
            str(example / "cases.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 failed" in proc.stdout
