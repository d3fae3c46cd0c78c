"""`agentwall keygen` and `agentwall promote`, run as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agentwall.cli import main
from agentwall.promote import keyfiles, signing

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "promotable" / "policy.yaml"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    shutil.copy(EXAMPLE, tmp_path / "policy.yaml")
    assert main(["keygen", "--out", str(tmp_path / "prod")]) == 0
    return tmp_path


def _promote(work: Path, *extra: str) -> int:
    return main(["promote", "--policy", str(work / "policy.yaml"), *extra])


def _verify(work: Path, *keys: str) -> int:
    trusted = [arg for key in keys for arg in ("--trusted-key", str(work / key))]
    return _promote(work, "--verify", *trusted)


def test_keygen_writes_a_private_key_only_the_owner_can_read(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mode = stat.S_IMODE(os.stat(work / "prod.key").st_mode)
    assert mode == 0o600
    assert (work / "prod.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    capsys.readouterr()
    assert main(["keygen", "--out", str(work / "prod")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_promote_signs_and_verify_accepts(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _promote(work, "--key", str(work / "prod.key")) == 0
    out = capsys.readouterr().out
    assert "findings: none" in out
    assert "result: READY; signed ->" in out
    assert "DEMO" not in out
    key_id = signing.key_id(keyfiles.read_public_keys([work / "prod.pub"])[0])
    assert key_id in out
    statement = json.loads((work / "policy.yaml.sig").read_text())["statement"]
    assert statement["demo"] is False
    assert statement["key_id"] == key_id
    assert _verify(work, "prod.pub") == 0
    assert "signature: VERIFIED" in capsys.readouterr().out


def test_reformatting_keeps_the_signature_valid(work: Path) -> None:
    assert _promote(work, "--key", str(work / "prod.key")) == 0
    text = (work / "policy.yaml").read_text()
    flow = "      - {name: branch, type: string, enum: [main, develop]}\n"
    block = (
        "      - enum:\n"
        "          - 'main'\n"
        '          - "develop"\n'
        "        type: string   # keys reordered, quoting changed\n"
        "        name: branch\n"
    )
    assert flow in text
    reformatted = "# a new comment\n" + text.replace(flow, block).replace(
        "default_action: deny", 'default_action: "deny"'
    )
    (work / "policy.yaml").write_text(reformatted)
    assert _verify(work, "prod.pub") == 0


@pytest.mark.parametrize("tamper", ["edited", "swapped", "untrusted"])
def test_tampering_is_refused(work: Path, tamper: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _promote(work, "--key", str(work / "prod.key")) == 0
    if tamper == "edited":
        text = (work / "policy.yaml").read_text()
        (work / "policy.yaml").write_text(text.replace("maximum: 100", "maximum: 1000"))
        expected = "hashes to"
    elif tamper == "swapped":
        other = work / "other.yaml"
        shutil.copy(EXAMPLE, other)
        other.write_text(
            other.read_text().replace("calls_per_second: 0.1,", "calls_per_second: 1,")
        )
        assert main(["promote", "--policy", str(other), "--key", str(work / "prod.key")]) == 0
        shutil.copy(work / "other.yaml.sig", work / "policy.yaml.sig")
        expected = "signature is for policy sha256"
    else:
        assert main(["keygen", "--out", str(work / "attacker")]) == 0
        assert _promote(work, "--key", str(work / "attacker.key")) == 0
        expected = "not a trusted key"
    capsys.readouterr()
    assert _verify(work, "prod.pub") == 2
    assert expected in capsys.readouterr().err


def test_demo_signature_is_marked_and_refused(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _promote(work) == 0
    out = capsys.readouterr().out
    assert "DEMO" in out
    assert json.loads((work / "policy.yaml.sig").read_text())["statement"]["demo"] is True
    assert _verify(work, "prod.pub") == 2
    assert "ephemeral DEMO key" in capsys.readouterr().err


def test_blocked_policy_is_not_signed_and_old_signature_is_kept(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _promote(work, "--key", str(work / "prod.key")) == 0
    before = (work / "policy.yaml.sig").read_bytes()
    text = (work / "policy.yaml").read_text()
    (work / "policy.yaml").write_text(text.replace("default_action: deny", "default_action: allow"))
    capsys.readouterr()
    assert _promote(work, "--key", str(work / "prod.key")) == 1
    out = capsys.readouterr().out
    assert "BLOCKING default_allow" in out
    assert "NOT READY" in out
    assert (work / "policy.yaml.sig").read_bytes() == before


def test_json_output(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_path = work / "custom.sig"
    code = _promote(
        work, "--key", str(work / "prod.key"), "--out", str(out_path), "--format", "json"
    )
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    assert document["ready"] is True
    assert document["findings"] == []
    assert document["signature"]["path"] == str(out_path)
    assert document["signature"]["demo"] is False
    assert document["score"]["total"] == 12
    assert out_path.exists()
    assert not (work / "policy.yaml.sig").exists()


def test_no_sign_writes_nothing_and_no_policy_blocks(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _promote(work, "--no-sign") == 0
    assert not (work / "policy.yaml.sig").exists()
    assert "not signed: --no-sign" in capsys.readouterr().out
    assert main(["promote"]) == 1
    assert "BLOCKING no_policy" in capsys.readouterr().out


def test_unusable_input_is_exit_2(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "bad.yaml").write_text("version: '2'\ndefault_action: deny\ntoolz: []\n")
    assert main(["promote", "--policy", str(work / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:3" in err
    assert _promote(work, "--key", str(work / "prod.pub")) == 2
    assert "not an unencrypted PEM private key" in capsys.readouterr().err
    assert _promote(work, "--verify") == 2
    assert "--trusted-key" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_console_script_end_to_end(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "policy.yaml")
    exe = [sys.executable, "-m", "agentwall"]

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*exe, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )

    assert run("keygen", "--out", "prod").returncode == 0
    signed = run("promote", "--policy", "policy.yaml", "--key", "prod.key")
    assert signed.returncode == 0, signed.stderr
    good = run("promote", "--policy", "policy.yaml", "--verify", "--trusted-key", "prod.pub")
    assert good.returncode == 0, good.stderr
    (tmp_path / "policy.yaml.sig").unlink()
    unsigned = run("promote", "--policy", "policy.yaml", "--verify", "--trusted-key", "prod.pub")
    assert unsigned.returncode == 2
    assert "the policy is not signed" in unsigned.stderr
