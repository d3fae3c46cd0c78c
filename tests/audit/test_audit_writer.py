"""The writer as a real process, reached over a real Unix socket."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvloop

from agentwall.audit.keys import AuditKey
from agentwall.audit.log import AuditLog
from agentwall.audit.reader import iter_entries
from agentwall.audit.verify import verify_files
from agentwall.errors import AuditError, AuditEventError
from agentwall.io.audit_writer import AuditWriterClient, AuditWriterProcess, render_metrics
from agentwall.types import AuditEvent

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120, method="thread")]

MakeEvent = Callable[..., AuditEvent]


def run(coro: Coroutine[Any, Any, None]) -> None:
    uvloop.run(coro)


@pytest.fixture
def writer(log_path: Path, key_file: Path) -> Iterator[AuditWriterProcess]:
    proc = AuditWriterProcess(log_path, key_file=key_file)
    yield proc
    proc.stop()
    proc.cleanup()


def by_seq(log_path: Path) -> dict[int, dict[str, Any]]:
    return {row["seq"]: row for row in map(orjson.loads, log_path.read_bytes().splitlines())}


def test_records_are_durable_when_acknowledged_and_the_chain_resumes(
    writer: AuditWriterProcess, log_path: Path, key: AuditKey, make_event: MakeEvent
) -> None:
    writer.start()

    async def scenario() -> None:
        client = AuditWriterClient(writer.socket_path)
        with pytest.raises(AuditError, match="not connected"):
            await client.record(make_event(0))
        async with client:
            assert client.ready
            assert await client.record(make_event(0)) == 1
            # On disk by the time record() returned.
            assert by_seq(log_path)[1]["call_id"] == "c-0"
            seqs = await asyncio.gather(*(client.record(make_event(i)) for i in range(1, 200)))
            assert sorted(seqs) == list(range(2, 201))
            rows = by_seq(log_path)
            assert all(rows[s]["call_id"] == f"c-{i}" for i, s in enumerate(seqs, start=1))
            stats = await client.writer_stats()
            assert stats.log.entries == 200
            assert stats.log.batches < 200  # concurrent records shared fsyncs
            text = render_metrics(client.stats(), stats)
            assert "agentwall_audit_batch_entries_bucket" in text
            assert "agentwall_audit_records_total 200" in text

    run(scenario())
    assert writer.stop() == 0
    writer.start()

    async def again() -> None:
        async with AuditWriterClient(writer.socket_path) as client:
            assert await client.record(make_event(500)) == 201

    run(again())
    writer.stop()
    outcome = verify_files([log_path], [key])
    assert outcome.valid, outcome.report.damage
    assert outcome.report.entries == 201


def test_start_fails_loudly_when_the_log_is_owned(
    writer: AuditWriterProcess, log_path: Path, key: AuditKey
) -> None:
    with AuditLog.open(log_path, key), pytest.raises(AuditError, match="another process owns"):
        writer.start()
    assert not writer.alive


def test_a_dead_writer_fails_calls_promptly_and_readiness_says_so(
    writer: AuditWriterProcess, make_event: MakeEvent
) -> None:
    writer.start()
    failures: list[str] = []

    async def scenario() -> None:
        async with AuditWriterClient(writer.socket_path, deadline_s=30.0) as client:
            await client.record(make_event(0))
            writer.kill()
            # in flight when the connection drops, or refused at once after
            for i in range(1000):
                try:
                    await client.record(make_event(i))
                except AuditError as exc:
                    failures.append(str(exc))
                    break
            # Promptly: failed by the lost connection, not by waiting out the
            # 30 s acknowledgement deadline (whose error says so).
            assert failures
            assert "connection was lost" in failures[0]
            assert "did not acknowledge" not in failures[0]
            assert not client.ready
            assert "lost" in client.status

    run(scenario())
    assert failures


def test_a_stalled_writer_hits_the_deadline_then_recovers(
    writer: AuditWriterProcess, make_event: MakeEvent
) -> None:
    writer.start()
    pid = writer.pid
    assert pid is not None
    failures: list[str] = []

    async def scenario() -> None:
        async with AuditWriterClient(writer.socket_path, deadline_s=0.5) as client:
            await client.record(make_event(0))
            os.kill(pid, signal.SIGSTOP)
            try:
                await client.record(make_event(1))
            except AuditError as exc:
                failures.append(str(exc))
            finally:
                os.kill(pid, signal.SIGCONT)
            assert not client.ready
            assert client.stats().deadline_expired == 1
            for _ in range(100):
                try:
                    await client.record(make_event(2))
                    break
                except AuditError:
                    await asyncio.sleep(0.05)
            assert client.ready

    run(scenario())
    assert len(failures) == 1
    assert "did not acknowledge" in failures[0]


def test_garbage_on_the_socket_only_hurts_the_sender(
    writer: AuditWriterProcess, make_event: MakeEvent
) -> None:
    writer.start()

    async def scenario() -> None:
        async with AuditWriterClient(writer.socket_path) as client:
            bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            bad.connect(str(writer.socket_path))
            bad.sendall(b"\x00\x00\x00\x05hello")
            bad.settimeout(10)
            assert bad.recv(100) == b""  # dropped
            bad.close()
            assert await client.record(make_event(0)) == 1

    run(scenario())


def test_values_msgpack_cannot_carry_are_logged_exactly(
    writer: AuditWriterProcess, log_path: Path, key: AuditKey, make_event: MakeEvent
) -> None:
    writer.start()
    huge = 10**40

    async def scenario() -> None:
        async with AuditWriterClient(writer.socket_path) as client:
            seqs = await asyncio.gather(
                client.record(make_event(0)),
                client.record(AuditEvent(event="decision", call_id="big", params={"n": huge})),
                client.record(make_event(2)),
            )
            assert sorted(seqs) == [1, 2, 3]

    run(scenario())
    writer.stop()
    lines = [json.loads(line) for line in log_path.read_bytes().splitlines()]
    big = next(row for row in lines if row["call_id"] == "big")
    assert big["params"] == {"n": huge}
    assert next(iter_entries([log_path]))["seq"] == 1
    assert [e["params"] for e in iter_entries([log_path]) if e["call_id"] == "big"] == [{"n": huge}]
    assert verify_files([log_path], [key]).valid


def test_an_event_that_cannot_be_encoded_is_refused_alone(
    log_path: Path, key: AuditKey, make_event: MakeEvent
) -> None:
    with AuditLog.open(log_path, key) as log:
        log.append_batch([make_event(0)])
        size = log_path.stat().st_size
        poison = AuditEvent(event="decision", params={1: "x", "a": 2})  # keys JSON cannot sort
        with pytest.raises(AuditEventError):
            log.append_batch([make_event(1), poison])
        assert log_path.stat().st_size == size
        assert log.append_batch([make_event(2)]) == [2]
    assert verify_files([log_path], [key]).valid
