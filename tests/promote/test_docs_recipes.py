"""The third-party verification recipes in docs/promote.md are run, not just shown."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentwall.core.canonical import sha256_hex
from agentwall.promote import keyfiles, signing

DOC = Path(__file__).resolve().parents[2] / "docs" / "promote.md"
POLICY_HASH = sha256_hex(b"a policy's canonical form")


def _block(name: str) -> str:
    match = re.search(
        rf"<!-- tested-block: {name} -->\n```\w+\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S
    )
    assert match, f"docs/promote.md has no tested block {name!r}"
    return match.group(1)


def _signed(tmp_path: Path, *, demo: bool = False, policy_hash: str = POLICY_HASH) -> Path:
    key = signing.generate_private_key()
    keyfiles.write_keypair(tmp_path / "prod", key)
    doc = signing.sign_policy(
        policy_hash,
        key,
        signed_at=datetime(2026, 1, 27, 10, 0, tzinfo=UTC),
        agentwall_version="0.1.0",
        demo=demo,
    )
    return keyfiles.write_signature(tmp_path / "policy.yaml.sig", doc)


def _run_openssl_recipe(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _block("openssl")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed; the recipe needs it")


@pytest.mark.timeout(120)
def test_openssl_recipe_verifies_a_good_signature(tmp_path: Path) -> None:
    _require("openssl", "jq", "base64", "sha256sum")
    sig = _signed(tmp_path)
    result = _run_openssl_recipe(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Signature Verified Successfully" in result.stdout
    lines = result.stdout.splitlines()
    key_id = json.loads(sig.read_bytes())["statement"]["key_id"]
    assert lines[1] == lines[2] == key_id
    assert lines[3:] == [POLICY_HASH, "false", "2026-01-27T10:00:00Z"]


@pytest.mark.timeout(120)
def test_openssl_recipe_refuses_a_tampered_payload(tmp_path: Path) -> None:
    _require("openssl", "jq", "base64", "sha256sum")
    sig = _signed(tmp_path)
    document = json.loads(sig.read_bytes())
    statement = dict(document["statement"], policy_sha256=sha256_hex(b"other"))
    document["payload"] = base64.b64encode(
        json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    ).decode()
    sig.write_text(json.dumps(document))
    result = _run_openssl_recipe(tmp_path)
    assert result.returncode != 0
    assert "Signature Verification Failure" in result.stdout + result.stderr


def _run_python_recipe(tmp_path: Path, policy_hash: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "verify_policy_sig.py"
    script.write_text(_block("python"))
    assert len(_block("python").splitlines()) <= 22, "the docs promise a ~20-line script"
    return subprocess.run(
        [sys.executable, str(script), "policy.yaml.sig", "prod.pub", policy_hash],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.timeout(120)
def test_python_recipe(tmp_path: Path) -> None:
    _signed(tmp_path)
    good = _run_python_recipe(tmp_path, POLICY_HASH)
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("OK sha256:")
    stale = _run_python_recipe(tmp_path, sha256_hex(b"edited policy"))
    assert stale.returncode == 1
    assert "signed other policy content" in stale.stderr


@pytest.mark.timeout(120)
def test_python_recipe_refuses_demo_and_bad_signature(tmp_path: Path) -> None:
    sig = _signed(tmp_path, demo=True)
    demo = _run_python_recipe(tmp_path, POLICY_HASH)
    assert demo.returncode == 1
    assert "ephemeral DEMO key" in demo.stderr
    document = json.loads(sig.read_bytes())
    raw = bytearray(base64.b64decode(document["signature"]))
    raw[0] ^= 0x80
    document["signature"] = base64.b64encode(bytes(raw)).decode()
    sig.write_text(json.dumps(document))
    bad = _run_python_recipe(tmp_path, POLICY_HASH)
    assert bad.returncode != 0
    assert "InvalidSignature" in bad.stderr
