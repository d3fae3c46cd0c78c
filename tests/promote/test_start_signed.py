"""--require-signed on a real `agentwall start` (writer, workers, SDK upstream):
start-up refusals, the signer in the audit log, and SIGHUP reloads refused
(edited after signing, untrusted key) or accepted (re-signed), through both the
pre-forked pool and the in-process evaluator."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from test_start_support import agentwall_start, stop, upstream_server

from agentwall import __version__
from agentwall.errors import POLICY_DENIED
from agentwall.policy import load_policy
from agentwall.promote import keyfiles, signing

pytestmark = [pytest.mark.integration]

POLICY = """\
version: "2"
default_action: deny
tools:
  - name: echo
    action: allow
  - name: add
    action: allow
"""


def _sign(tmp: Path, keybase: str = "prod", *, demo: bool = False) -> str:
    policy = load_policy(tmp / "policy.yaml")
    key = keyfiles.read_private_key(tmp / f"{keybase}.key")
    document = signing.sign_policy(
        policy.hash, key, signed_at=datetime.now(UTC), agentwall_version=__version__, demo=demo
    )
    keyfiles.write_signature(tmp / "policy.yaml.sig", document)
    return signing.key_id(key.public_key())


def _setup(tmp: Path) -> None:
    (tmp / "policy.yaml").write_text(POLICY)
    for name in ("prod", "attacker"):
        keyfiles.write_keypair(tmp / name, signing.generate_private_key())


def _flags(tmp: Path) -> list[str]:
    return ["--policy", str(tmp / "policy.yaml"), "--require-signed",
            "--trusted-key", str(tmp / "prod.pub")]  # fmt: skip


def _entries(log_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]


def _eventually(check: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


async def _echo(url: str) -> tuple[str | None, int | None]:
    async with Client(url, mode="legacy") as client:
        try:
            result = await client.call_tool("echo", {"text": "hi"})
        except MCPError as exc:
            return None, exc.error.code
        return result.content[0].text, None  # type: ignore[union-attr]


def _count(log_path: Path, event: str) -> int:
    return sum(1 for e in _entries(log_path) if e.get("event") == event)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda tmp: None, "the policy is not signed"),
        (lambda tmp: _sign(tmp, "attacker"), "not a trusted key"),
        (lambda tmp: _sign(tmp, demo=True), "ephemeral DEMO key"),
    ],
    ids=["unsigned", "untrusted", "demo"],
)
def test_start_refuses_with_exit_2(tmp_path: Path, prepare: Any, message: str) -> None:
    _setup(tmp_path)
    prepare(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "agentwall", "start", "--listen", "127.0.0.1:0",
         "--mcp-url", "http://127.0.0.1:9/mcp", "--log-path", str(tmp_path / "audit.log"),
         *_flags(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


@pytest.mark.timeout(180)
@pytest.mark.parametrize("workers", ["1", "0"], ids=["pool", "in-process"])
def test_start_signed_and_sighup_reloads(tmp_path: Path, workers: str) -> None:
    _setup(tmp_path)
    key_id = _sign(tmp_path)
    policy_path = tmp_path / "policy.yaml"
    with (
        upstream_server(tmp_path) as (upstream_url, _control),
        agentwall_start(tmp_path, upstream_url, "--workers", workers, *_flags(tmp_path)) as (
            url,
            proc,
            log_path,
        ),
    ):
        assert asyncio.run(_echo(url)) == ("hi", None)
        first_hash = load_policy(policy_path).hash

        # Edited after signing: refused; the running policy stays.
        policy_path.write_text(POLICY.replace("  - name: echo\n    action: allow\n", ""))
        proc.send_signal(signal.SIGHUP)
        assert _eventually(lambda: _count(log_path, "policy_reload_failed") == 1)
        assert asyncio.run(_echo(url)) == ("hi", None)

        # Signed, but by a key the proxy does not trust: refused.
        _sign(tmp_path, "attacker")
        proc.send_signal(signal.SIGHUP)
        assert _eventually(lambda: _count(log_path, "policy_reload_failed") == 2)
        assert asyncio.run(_echo(url)) == ("hi", None)

        # Signed by the trusted key: applied everywhere.
        _sign(tmp_path)
        proc.send_signal(signal.SIGHUP)
        assert _eventually(lambda: _count(log_path, "policy_loaded") == 2)
        assert asyncio.run(_echo(url)) == (None, POLICY_DENIED)
        assert stop(proc) == 0

    entries = _entries(log_path)
    loaded = [e for e in entries if e["event"] == "policy_loaded"]
    assert [e["policy_hash"] for e in loaded] == [first_hash, load_policy(policy_path).hash]
    assert all(e["detail"]["signature_key_id"] == key_id for e in loaded)
    assert all(e["detail"]["signature_trusted"] is True for e in loaded)
    failed = [e for e in entries if e["event"] == "policy_reload_failed"]
    assert "hashes to" in failed[0]["reason"]
    assert "not a trusted key" in failed[1]["reason"]
    assert all(e["policy_hash"] == first_hash for e in failed)
    verified = subprocess.run(
        [sys.executable, "-m", "agentwall", "verify-log", str(log_path)],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
