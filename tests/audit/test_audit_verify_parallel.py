"""Verifying in pieces gives the one-pass verdict, whatever the split."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentwall.audit.chain import VerifyReport
from agentwall.audit.files import chain_files
from agentwall.audit.keys import AuditKey
from agentwall.audit.log import AuditLog
from agentwall.audit.verify import verify_files
from agentwall.types import AuditEvent

MakeEvent = Callable[..., AuditEvent]


def _core(report: VerifyReport) -> VerifyReport:
    # Pieces know line numbers only relative to themselves; the rest must match.
    return msgspec.structs.replace(report, first_prev=None, watched_mac=None)


def both(files: list[Path], keys: list[AuditKey], pieces: int) -> tuple[VerifyReport, VerifyReport]:
    one = verify_files(files, keys).report
    split = verify_files(
        files,
        keys,
        map_chunks=map,
        pieces=pieces,  # type: ignore[arg-type]
        parallel_min_bytes=0,
    ).report
    return _core(one), _core(split)


@pytest.fixture
def busy_log(
    log_path: Path, key: AuditKey, other_key: AuditKey, make_event: MakeEvent
) -> list[Path]:
    """Rotation, a restart with a torn tail, a key change: every joint type."""
    with AuditLog.open(log_path, key, max_bytes=4000) as log:
        for i in range(25):
            log.append_batch([make_event(i) for _ in range(i % 3 + 1)])
    with log_path.open("ab") as f:
        f.write(b'{"torn')
    with AuditLog.open(log_path, other_key, max_bytes=4000) as log:
        for i in range(10):
            log.append_batch([make_event(100 + i)])
    return chain_files(log_path)


@pytest.mark.parametrize("pieces", [1, 2, 3, 7])
def test_valid_log_in_pieces(
    busy_log: list[Path], key: AuditKey, other_key: AuditKey, pieces: int
) -> None:
    one, split = both(busy_log, [key, other_key], pieces)
    assert one.valid
    assert split == one
    assert {n.kind for n in one.notices} == {"recovery:torn_tail", "key_changed"}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    line=st.integers(0, 200),
    op=st.sampled_from(["flip", "delete", "swap"]),
    pieces=st.integers(2, 5),
)
def test_damage_is_classified_the_same_in_pieces(
    busy_log: list[Path], key: AuditKey, other_key: AuditKey, line: int, op: str, pieces: int
) -> None:
    target = busy_log[0]
    original = target.read_bytes()
    rows = original.splitlines(keepends=True)
    i = line % len(rows)
    if op == "flip":
        row = bytearray(rows[i])
        row[len(row) // 2] ^= 0x04
        rows[i] = bytes(row)
    elif op == "delete":
        del rows[i]
    elif len(rows) > 1:
        j = (i + 1) % len(rows)
        rows[i], rows[j] = rows[j], rows[i]
    target.write_bytes(b"".join(rows))
    try:
        one, split = both(busy_log, [key, other_key], pieces)
    finally:
        target.write_bytes(original)
    assert split == one
    if b"".join(rows) != original:
        assert not one.valid
