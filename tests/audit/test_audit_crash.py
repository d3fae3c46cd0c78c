"""Crashes and full disks, with real processes and real kernel failures.

Nothing here fakes a failure in Python: the writer is SIGKILLed, stalled or
runs out of space on a real (tmpfs) file system or past a real RLIMIT_FSIZE.
Afterwards the log must verify, and every record() that returned a seq must
have its entry at that seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvloop

from agentwall.audit.files import chain_files
from agentwall.audit.keys import AuditKey
from agentwall.audit.verify import verify_files
from agentwall.errors import AuditError
from agentwall.io.audit_writer import AuditWriterClient, AuditWriterProcess
from agentwall.types import AuditEvent

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180, method="thread")]

MakeEvent = Callable[..., AuditEvent]


def rows_by_seq(log_path: Path) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for path in chain_files(log_path):
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                row = orjson.loads(line)
                out[row["seq"]] = row
    return out


def assert_every_ack_is_on_disk(log_path: Path, acked: dict[str, int]) -> None:
    rows = rows_by_seq(log_path)
    assert len(set(acked.values())) == len(acked), "a seq was handed out twice"
    missing = {cid: seq for cid, seq in acked.items() if rows.get(seq, {}).get("call_id") != cid}
    assert not missing, f"acknowledged but not in the log: {list(missing.items())[:5]}"


def test_sigkill_the_writer_mid_stream(
    log_path: Path, key_file: Path, key: AuditKey, make_event: MakeEvent
) -> None:
    writer = AuditWriterProcess(log_path, key_file=key_file)
    writer.start()
    acked: dict[str, int] = {}
    refused = 0
    kills = 0
    ready_seen_false = False

    async def scenario() -> None:
        nonlocal refused, kills, ready_seen_false
        supervisor = asyncio.create_task(writer.supervise(poll_interval_s=0.02))
        client = AuditWriterClient(writer.socket_path, deadline_s=5.0)
        await client.connect()
        try:
            await stream(client, supervisor)
        finally:
            await client.close()
            writer.stop()
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor

    async def stream(client: AuditWriterClient, supervisor: asyncio.Task[None]) -> None:
        nonlocal refused, kills, ready_seen_false
        done = asyncio.Event()
        counter = iter(range(10**9))

        async def submitter() -> None:
            nonlocal refused
            while not done.is_set():
                i = next(counter)
                event = AuditEvent(
                    event="decision",
                    call_id=f"k-{i}",
                    session="s",
                    method="tools/call",
                    target="t",
                    decision="allow",
                )
                try:
                    acked[f"k-{i}"] = await client.record(event)
                except AuditError:
                    refused += 1
                    await asyncio.sleep(0.005)

        async def more_acks(count: int, deadline: float) -> None:
            target = len(acked) + count
            # Polls a counter many tasks bump; bounded by the deadline.
            while len(acked) < target and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)

        async def killer() -> None:
            nonlocal kills, ready_seen_false
            deadline = asyncio.get_running_loop().time() + 90
            while kills < 3 and asyncio.get_running_loop().time() < deadline:
                await more_acks(300, deadline)
                writer.kill()  # SIGKILL, mid-stream
                kills += 1
                for _ in range(50):
                    if not client.ready:
                        ready_seen_false = True
                        break
                    await asyncio.sleep(0.01)
            await more_acks(300, deadline)
            done.set()

        await asyncio.gather(killer(), *(submitter() for _ in range(32)))

    try:
        uvloop.run(scenario())
    finally:
        writer.stop()
        writer.cleanup()
    assert kills == 3
    assert writer.restarts >= 3
    assert ready_seen_false
    assert refused > 0  # calls during the outage were refused, not queued
    assert len(acked) >= 1200
    assert_every_ack_is_on_disk(log_path, acked)
    outcome = verify_files(chain_files(log_path), [key])
    assert outcome.valid, outcome.report.damage
    # Anything recovered was only ever an unacknowledged torn tail.
    assert {n.kind for n in outcome.report.notices} <= {"recovery:torn_tail"}


def big(i: int) -> AuditEvent:
    return AuditEvent(
        event="decision",
        call_id=f"d-{i}",
        session="s",
        method="tools/call",
        target="t",
        decision="allow",
        reason="x" * 200,
    )


def _drive_until_failure(
    writer: AuditWriterProcess, acked: dict[str, int], on_full: Callable[[], None]
) -> list[str]:
    errors: list[str] = []

    async def scenario() -> None:
        async with AuditWriterClient(writer.socket_path, deadline_s=10.0) as client:
            await fill(client)

    async def fill(client: AuditWriterClient) -> None:
        i = 0
        while not errors and i < 20000:
            try:
                acked[f"d-{i}"] = await client.record(big(i))
            except AuditError as exc:
                errors.append(str(exc))
            i += 1
        assert errors, "the disk never filled"
        assert not client.ready
        # Still refused while full: no partial success, no hang.
        try:
            acked["refused"] = await client.record(big(-1))
        except AuditError as exc:
            errors.append(str(exc))
        on_full()
        for j in range(200):
            try:
                acked[f"after-{j}"] = await client.record(
                    AuditEvent(event="decision", call_id=f"after-{j}")
                )
                break
            except AuditError:
                await asyncio.sleep(0.05)
        assert client.ready

    uvloop.run(scenario())
    return errors


@pytest.fixture
def small_tmpfs(tmpfs: Callable[[str], Path]) -> Path:
    return tmpfs("256k")


def test_disk_full_on_a_real_tmpfs(small_tmpfs: Path, key_file: Path, key: AuditKey) -> None:
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * 96 * 1024)
    log_path = small_tmpfs / "audit.log"
    writer = AuditWriterProcess(log_path, key_file=key_file)
    writer.start()
    acked: dict[str, int] = {}
    try:
        errors = _drive_until_failure(writer, acked, filler.unlink)
    finally:
        writer.stop()
        writer.cleanup()
    assert "No space left on device" in errors[0]
    assert len(errors) == 2, errors  # the retry while full was refused too
    assert_every_ack_is_on_disk(log_path, acked)
    outcome = verify_files([log_path], [key])
    assert outcome.valid, outcome.report.damage
    assert outcome.report.notices == ()
    assert outcome.report.entries == len(acked)


def test_file_size_limit_hit_by_the_writer(log_path: Path, key_file: Path, key: AuditKey) -> None:
    writer = AuditWriterProcess(log_path, key_file=key_file)
    writer.start()
    pid = writer.pid
    assert pid is not None
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    # Only the soft limit: lowering and raising it back needs no privilege.
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (log_path.stat().st_size + 20_000, hard))
    acked: dict[str, int] = {}
    try:
        errors = _drive_until_failure(
            writer, acked, lambda: resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
        )
    finally:
        writer.stop()
        writer.cleanup()
    assert "File too large" in errors[0]
    assert len(errors) == 2, errors
    assert_every_ack_is_on_disk(log_path, acked)
    outcome = verify_files([log_path], [key])
    assert outcome.valid, outcome.report.damage
    assert outcome.report.entries == len(acked)
