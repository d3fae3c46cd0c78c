"""AuditLog on real files: durability bookkeeping, restart, recovery, rotation."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentwall.audit.files import head_path, rotated_files
from agentwall.audit.head import read_head
from agentwall.audit.keys import AuditKey
from agentwall.audit.log import AuditLog, LocalAuditSink
from agentwall.audit.verify import verify_files
from agentwall.errors import AuditError
from agentwall.types import AuditEvent

WriteLog = Callable[..., list[int]]
MakeEvent = Callable[..., AuditEvent]


def entries(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_append_returns_seqs_and_seals_the_head_before_returning(
    log_path: Path, key: AuditKey, make_event: MakeEvent
) -> None:
    with AuditLog.open(log_path, key) as log:
        assert log.append_batch([make_event(i) for i in range(3)]) == [1, 2, 3]
        assert log.append_batch([]) == []
        assert log.append_batch([make_event(3)]) == [4]
        # Still open: what a reader sees now already covers every entry returned.
        head = read_head(head_path(log_path).read_bytes(), {key.key_id: key.mac_key})
        assert not isinstance(head, type(None))
        assert getattr(head, "seq", None) == 4
        stats = log.stats()
        assert stats.entries == 4
        assert stats.batches == 2
        assert stats.last_seq == 4
        assert sum(stats.fsync_us_counts) == 2
    assert os.stat(log_path).st_mode & 0o777 == 0o600
    rows = entries(log_path)
    assert [r["seq"] for r in rows] == [1, 2, 3, 4]
    assert rows[0]["prev"] == "0" * 64
    assert rows[1]["prev"] == rows[0]["mac"]
    assert all(r["key_id"] == key.key_id and r["v"] == 1 for r in rows)


def test_restart_resumes_the_chain(log_path: Path, key: AuditKey, write_log: WriteLog) -> None:
    assert write_log(3) == [1, 2, 3]
    assert write_log(2) == [4, 5]
    with AuditLog.open(log_path, key) as log:
        assert log.startup_notes == ()
    outcome = verify_files([log_path], [key])
    assert outcome.valid
    assert outcome.report.entries == 5
    assert outcome.report.notices == ()


def test_torn_tail_is_cut_and_recorded_never_dropped(
    log_path: Path, key: AuditKey, write_log: WriteLog, make_event: MakeEvent
) -> None:
    write_log(4)
    torn = b'{"decision":"allow","event":"decision","key_id":"abc","seq":5,"sess'
    with log_path.open("ab") as f:
        f.write(torn)
    before = verify_files([log_path], [key])
    assert before.valid
    assert before.report.torn_tail
    size_before = log_path.stat().st_size
    with AuditLog.open(log_path, key) as log:
        assert any("cut" in n for n in log.startup_notes)
        assert log.append_batch([make_event(9)]) == [6]
    rows = entries(log_path)
    recovery = rows[4]
    assert recovery["event"] == "recovery"
    assert recovery["seq"] == 5
    detail = recovery["detail"]
    assert isinstance(detail, dict)
    assert detail["kind"] == "torn_tail"
    assert detail["length"] == len(torn)
    assert detail["offset"] == size_before - len(torn)
    assert detail["after_seq"] == 4
    assert detail["sha256"] == hashlib.sha256(torn).hexdigest()
    assert base64.b64decode(detail["excerpt_b64"]) == torn
    after = verify_files([log_path], [key])
    assert after.valid
    assert [n.kind for n in after.report.notices] == ["recovery:torn_tail"]


def test_unacknowledged_garbage_after_the_head_is_cut(
    log_path: Path, key: AuditKey, write_log: WriteLog
) -> None:
    write_log(3)
    with log_path.open("ab") as f:
        f.write(b'{"not":"an entry"}\n{"neither":1}\n')
    with AuditLog.open(log_path, key) as log:
        assert log.tip.seq == 4  # 3 entries + the recovery entry
    assert verify_files([log_path], [key]).valid


def test_entries_removed_from_the_end_are_recorded_at_restart(
    log_path: Path, key: AuditKey, write_log: WriteLog, make_event: MakeEvent
) -> None:
    write_log(6)
    lines = log_path.read_bytes().splitlines(keepends=True)
    log_path.write_bytes(b"".join(lines[:4]))
    stopped = verify_files([log_path], [key])
    assert stopped.report.damage is not None
    assert (stopped.report.damage.kind, stopped.report.damage.seq) == ("truncated", 5)
    with AuditLog.open(log_path, key) as log:
        assert any("removed" in n for n in log.startup_notes)
        # seqs 5 and 6 are never reused
        assert log.append_batch([make_event(0)]) == [8]
    rows = entries(log_path)
    assert rows[4]["seq"] == 7
    assert rows[4]["event"] == "recovery"
    after = verify_files([log_path], [key])
    assert after.report.damage is not None
    assert (after.report.damage.kind, after.report.damage.seq) == ("truncated", 5)


def test_a_deleted_head_is_recorded(log_path: Path, key: AuditKey, write_log: WriteLog) -> None:
    write_log(3)
    head_path(log_path).unlink()
    assert verify_files([log_path], [key]).report.damage.kind == "head_missing"  # type: ignore[union-attr]
    with AuditLog.open(log_path, key):
        pass
    after = verify_files([log_path], [key])
    assert after.valid
    assert [n.kind for n in after.report.notices] == ["recovery:head_missing"]


def test_refuses_to_resume_a_chain_whose_sealed_end_was_modified(
    log_path: Path, key: AuditKey, write_log: WriteLog
) -> None:
    write_log(3)
    data = log_path.read_bytes()
    log_path.write_bytes(data.replace(b'"latency_us":102', b'"latency_us":999'))
    with pytest.raises(AuditError, match="verify-log"):
        AuditLog.open(log_path, key)
    # and the refusal left the file alone
    assert b'"latency_us":999' in log_path.read_bytes()


def test_one_owner_at_a_time(log_path: Path, key: AuditKey) -> None:
    with AuditLog.open(log_path, key), pytest.raises(AuditError, match="another process"):
        AuditLog.open(log_path, key)
    with AuditLog.open(log_path, key):
        pass


def test_rotation_continues_the_chain_across_files(
    log_path: Path, key: AuditKey, make_event: MakeEvent
) -> None:
    seqs: list[int] = []
    with AuditLog.open(log_path, key, max_bytes=2000) as log:
        for i in range(30):
            seqs += log.append_batch([make_event(i)])
        assert log.stats().rotations >= 3
    rotated = rotated_files(log_path)
    assert len(rotated) >= 3
    # each new file opens with a log_rotated entry naming its predecessor
    first = entries(rotated[1])[0]
    assert first["event"] == "log_rotated"
    assert first["detail"] == {"previous_file": rotated[0].name}
    files = [log_path, *reversed(rotated)]  # any order: sorted by content
    outcome = verify_files(files, [key])
    assert outcome.valid, outcome.report.damage
    assert outcome.report.entries == 30 + len(rotated)
    # Giving only the active file is a partial chain, and the tool says why.
    partial = verify_files([log_path], [key])
    assert not partial.valid
    assert partial.hints
    # Resume after a restart.
    with AuditLog.open(log_path, key, max_bytes=2000) as log:
        tip = log.tip.seq
        assert log.append_batch([make_event(99)]) == [tip + 1]
    assert verify_files([log_path, *rotated_files(log_path)], [key]).valid


def test_crash_between_rotation_rename_and_recreate(
    log_path: Path, key: AuditKey, write_log: WriteLog, make_event: MakeEvent
) -> None:
    write_log(5)
    log_path.rename(Path(f"{log_path}.{1:012d}"))
    with AuditLog.open(log_path, key) as log:
        assert log.append_batch([make_event(0)]) == [6]
    outcome = verify_files([log_path, *rotated_files(log_path)], [key])
    assert outcome.valid
    assert outcome.report.entries == 6


def test_key_change_is_recorded_and_needs_both_keys(
    log_path: Path, key: AuditKey, other_key: AuditKey, write_log: WriteLog
) -> None:
    write_log(3)
    with AuditLog.open(log_path, other_key) as log:
        assert any("key changed" in n for n in log.startup_notes)
    rows = entries(log_path)
    assert rows[3]["event"] == "key_changed"
    assert rows[3]["key_id"] == other_key.key_id
    assert rows[3]["detail"] == {"old_key_id": key.key_id, "new_key_id": other_key.key_id}
    assert verify_files([log_path], [key, other_key]).valid
    damage = verify_files([log_path], [key], check_head=False).report.damage
    assert damage is not None
    assert (damage.kind, damage.seq) == ("wrong_key", 4)


def test_local_sink_is_durable_before_returning(
    log_path: Path, key: AuditKey, make_event: MakeEvent
) -> None:
    async def scenario() -> None:
        sink = LocalAuditSink(AuditLog.open(log_path, key))
        try:
            assert await sink.record(make_event(0)) == 1
            assert await sink.record(make_event(1)) == 2
            assert sink.ready
            assert len(entries(log_path)) == 2
        finally:
            sink.close()
        with pytest.raises(AuditError, match="closed"):
            await sink.record(make_event(2))

    asyncio.run(scenario())


@given(seq=st.integers(0, 2**63 - 1), mac=st.binary(min_size=32, max_size=32))
def test_head_sealer_writes_exactly_head_slot(seq: int, mac: bytes) -> None:
    """The writer's precomputed head encoding is byte for byte ``head_slot``
    (the documented construction), for any tip."""
    from agentwall.audit.chain import ChainTip
    from agentwall.audit.head import head_slot
    from agentwall.audit.log import HeadSealer
    from agentwall.audit.record import MacKey

    for raw_key in (b"\x07" * 32, bytes(range(64))):
        key = MacKey(raw_key)
        assert HeadSealer(key).slot(seq, mac.hex()) == head_slot(key, ChainTip(seq, mac.hex()))


@given(seq=st.integers(0, 2**40), prev=st.binary(min_size=32, max_size=32))
def test_seal_batch_with_known_raw_tip_is_the_same(seq: int, prev: bytes) -> None:
    """Passing the tip's raw mac (as AuditLog does) changes nothing."""
    from agentwall.audit.chain import ChainTip, seal_batch
    from agentwall.audit.record import MacKey

    key = MacKey(b"\x07" * 32)
    event = AuditEvent(event="decision", session="s", reason="r")
    tip = ChainTip(seq, prev.hex())
    slow = seal_batch(key, tip, [event, event], 1_700_000_000_000_000)
    fast = seal_batch(key, tip, [event, event], 1_700_000_000_000_000, prev)
    assert fast == slow
    assert fast.tip_mac_raw == bytes.fromhex(fast.tip.mac)


def test_appended_bytes_are_seal_batch_bytes(
    log_path: Path, key: AuditKey, make_event: MakeEvent
) -> None:
    """append_batch's own path (a lone event, and a batch) writes exactly
    what seal_batch (the documented construction, see test_audit_record)
    gives for the same tip and time."""
    from agentwall.audit.chain import seal_batch

    with AuditLog.open(log_path, key, clock_us=lambda: 1_700_000_000_123_456) as log:
        start = log_path.stat().st_size
        tip = log.tip
        lone = [make_event(1)]
        batch = [make_event(2), make_event(3), make_event(4)]
        log.append_batch(lone)
        log.append_batch(batch)
    first = seal_batch(key.mac_key, tip, lone, 1_700_000_000_123_456)
    second = seal_batch(key.mac_key, first.tip, batch, 1_700_000_000_123_456)
    assert log_path.read_bytes()[start:] == first.data + second.data
