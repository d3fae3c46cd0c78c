from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from agentwall.audit.keys import AuditKey
from agentwall.audit.log import AuditLog
from agentwall.types import AuditEvent


def decision(
    i: int, *, session: str = "s-1", tool: str = "read_file", outcome: str = "allow"
) -> AuditEvent:
    return AuditEvent(
        event="decision",
        session=session,
        transport="http",
        call_id=f"c-{i}",
        rpc_id=i,
        method="tools/call",
        target=tool,
        decision=outcome,  # type: ignore[arg-type]
        rule_id="tools.read_file" if outcome == "allow" else "safe_mode.sensitive_path",
        reason="allowed" if outcome == "allow" else "reads an SSH key",
        args_sha256="ab" * 32,
        latency_us=100 + i,
        policy_hash="cd" * 32,
    )


@pytest.fixture
def key() -> AuditKey:
    return AuditKey(os.urandom(32), source="test")


@pytest.fixture
def other_key() -> AuditKey:
    return AuditKey(os.urandom(32), source="other")


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.log"


WriteLog = Callable[..., list[int]]


@pytest.fixture
def write_log(log_path: Path, key: AuditKey) -> WriteLog:
    """Write ``batches`` of decision events through a real AuditLog."""

    def write(
        batches: list[int] | int = 10,
        *,
        path: Path = log_path,
        audit_key: AuditKey = key,
        **kwargs: object,
    ) -> list[int]:
        sizes = [1] * batches if isinstance(batches, int) else batches
        seqs: list[int] = []
        with AuditLog.open(path, audit_key, **kwargs) as log:  # type: ignore[arg-type]
            for size in sizes:
                start = len(seqs)
                seqs += log.append_batch([decision(start + i) for i in range(size)])
        return seqs

    return write


@pytest.fixture
def make_event() -> Callable[..., AuditEvent]:
    return decision


def pytest_configure() -> None:
    os.environ.pop("AGENTWALL_AUDIT_KEY", None)


@pytest.fixture
def key_file(tmp_path: Path, key: AuditKey) -> Path:
    path = tmp_path / "audit.key"
    path.write_text(key.secret.hex() + "\n")
    path.chmod(0o600)
    return path
