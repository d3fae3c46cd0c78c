"""--require-signed on a real `agentwall wrap` process: start-up refusal, the
signer in the audit log, and SIGHUP reloads refused or accepted by signature."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from test_wrap_servers import Host, wrap_argv

from agentwall import __version__
from agentwall.audit.keys import read_key_file
from agentwall.audit.verify import verify_files
from agentwall.errors import POLICY_DENIED
from agentwall.policy import load_policy
from agentwall.promote import keyfiles, signing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _sign(tmp: Path, keybase: str = "prod", *, demo: bool = False) -> str:
    """Sign tmp/policy.yaml as it is now; returns the key id."""
    policy = load_policy(tmp / "policy.yaml")
    key = keyfiles.read_private_key(tmp / f"{keybase}.key")
    document = signing.sign_policy(
        policy.hash, key, signed_at=datetime.now(UTC), agentwall_version=__version__, demo=demo
    )
    keyfiles.write_signature(tmp / "policy.yaml.sig", document)
    return signing.key_id(key.public_key())


def _argv(tmp: Path) -> list[str]:
    return wrap_argv(tmp, "--require-signed", "--trusted-key", str(tmp / "prod.pub"))


def _setup(tmp: Path) -> None:
    wrap_argv(tmp)  # writes the test policy and audit key
    for name in ("prod", "attacker"):
        keyfiles.write_keypair(tmp / name, signing.generate_private_key())


def _entries(tmp: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp / "audit.log").read_text().splitlines()]


def _wait_stderr(host: Host, text: bytes, count: int) -> None:
    deadline = time.monotonic() + 30
    while host.stderr.count(text) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host.stderr.count(text) >= count, bytes(host.stderr)


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda tmp: None, "the policy is not signed"),
        (lambda tmp: _sign(tmp, "attacker"), "not a trusted key"),
        (lambda tmp: _sign(tmp, demo=True), "ephemeral DEMO key"),
    ],
    ids=["unsigned", "untrusted", "demo"],
)
def test_wrap_refuses_to_start(tmp_path: Path, prepare: Any, message: str) -> None:
    _setup(tmp_path)
    prepare(tmp_path)
    result = subprocess.run(
        _argv(tmp_path), input=b"", capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert message in result.stderr.decode()
    assert not (tmp_path / "audit.log").exists()


def test_wrap_signed_start_and_reloads(tmp_path: Path) -> None:
    _setup(tmp_path)
    key_id = _sign(tmp_path)
    policy_path = tmp_path / "policy.yaml"
    host = Host(_argv(tmp_path), cwd=tmp_path)
    try:
        host.initialize()
        host.call(1, "echo", {})
        assert "result" in host.recv()

        # 1. Edited after signing: the reload is refused, echo stays allowed.
        original = policy_path.read_text()
        denying = original.replace("{name: echo, action: allow}", "{name: echo, action: deny}")
        policy_path.write_text(denying)
        host.proc.send_signal(signal.SIGHUP)
        _wait_stderr(host, b"policy reload failed", 1)
        host.call(2, "echo", {})
        assert "result" in host.recv()

        # 2. A signature by an untrusted key over the new content: refused too.
        _sign(tmp_path, "attacker")
        host.proc.send_signal(signal.SIGHUP)
        _wait_stderr(host, b"policy reload failed", 2)
        host.call(3, "echo", {})
        assert "result" in host.recv()

        # 3. Signed by the trusted key: the reload applies.
        _sign(tmp_path)
        host.proc.send_signal(signal.SIGHUP)
        _wait_stderr(host, b"policy reloaded", 1)
        host.call(4, "echo", {})
        assert host.recv()["error"]["code"] == POLICY_DENIED

        host.close_stdin()
        assert host.wait() == 0
    finally:
        host.kill()

    entries = _entries(tmp_path)
    start = next(e for e in entries if e["event"] == "proxy_start")
    assert start["detail"]["signature_key_id"] == key_id
    assert start["detail"]["signature_trusted"] is True
    failed = [e for e in entries if e["event"] == "policy_reload_failed"]
    assert len(failed) == 2
    assert "hashes to" in failed[0]["reason"]
    assert "not a trusted key" in failed[1]["reason"]
    assert all(e["policy_hash"] == start["policy_hash"] for e in failed)
    [loaded] = [e for e in entries if e["event"] == "policy_loaded"]
    assert loaded["detail"]["signature_key_id"] == key_id
    assert loaded["policy_hash"] == load_policy(policy_path).hash
    outcome = verify_files([tmp_path / "audit.log"], [read_key_file(tmp_path / "audit.key")])
    assert outcome.valid, outcome.report


def test_wrap_without_require_signed_warns_about_a_stale_signature(tmp_path: Path) -> None:
    _setup(tmp_path)
    _sign(tmp_path)
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(policy_path.read_text().replace("name: big", "name: bigger"))
    host = Host(wrap_argv(tmp_path), cwd=tmp_path)
    try:
        host.initialize()
        host.close_stdin()
        assert host.wait() == 0
    finally:
        host.kill()
    assert b"policy signature not valid (not enforced without --require-signed)" in host.stderr
    start = next(e for e in _entries(tmp_path) if e["event"] == "proxy_start")
    assert start["detail"]["signature_key_id"] is None
    assert "hashes to" in start["detail"]["signature_problem"]
