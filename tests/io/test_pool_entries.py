"""Evaluator workers that write their own audit entries (``WorkerAudit``):
a real audit writer process, real forked workers, and real faults (a stopped
writer, a killed writer and its restart, a dead zygote replaced by fork+exec).

A worker answers only once the entries of its batch are durable; the pool
then hands back decisions marked ``durable`` and the shell writes nothing.
Whatever the worker cannot make durable comes back as a refusal the shell
answers with 503, never as a decision it could act on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_pool import Harness, alive, call, foreign_threads

from agentwall.audit.keys import AuditKey
from agentwall.audit.verify import verify_files
from agentwall.cache.shm import DecisionCache
from agentwall.io.audit_writer import AuditWriterProcess
from agentwall.io.contracts import AUDIT_FAILED_CATEGORY
from agentwall.io.pool import EvaluatorPool
from agentwall.io.worker import WorkerAudit
from agentwall.types import Decision

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def key() -> AuditKey:
    return AuditKey(os.urandom(32), source="test")


@pytest.fixture
def writer(tmp_path: Path, key: AuditKey) -> Iterator[AuditWriterProcess]:
    key_file = tmp_path / "audit.key"
    key_file.write_text(key.secret.hex() + "\n")
    key_file.chmod(0o600)
    proc = AuditWriterProcess(tmp_path / "audit.log", key_file=key_file)
    proc.start()
    yield proc
    if proc.pid is not None and alive(proc.pid):
        os.kill(proc.pid, signal.SIGCONT)
    proc.stop()
    proc.cleanup()


@pytest.fixture
def make_pool(writer: AuditWriterProcess) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(path: Path | None, audit: WorkerAudit | None = None, **kwargs: Any) -> Harness:
        kwargs.setdefault("unsafe_allow_threads", foreign_threads())
        kwargs.setdefault("audit", audit or WorkerAudit(str(writer.socket_path)))
        harness = Harness(EvaluatorPool.start(path, **kwargs))
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


def sleeps(pid: int) -> int:
    """How often the process has gone to sleep (voluntary context switches):
    a worker sleeps only when it has nothing left to do."""
    with open(f"/proc/{pid}/status") as f:
        return int(
            next(line for line in f if line.startswith("voluntary_ctxt_switches:")).split()[1]
        )


def entries(writer: AuditWriterProcess) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in writer.log_path.read_bytes().splitlines()]


def by_call(writer: AuditWriterProcess) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in entries(writer):
        if entry.get("call_id"):
            out.setdefault(entry["call_id"], []).append(entry)
    return out


def test_each_decision_is_durable_before_the_worker_answers(
    policy_file: Path, make_pool: Callable[..., Harness], writer: AuditWriterProcess, key: AuditKey
) -> None:
    h = make_pool(policy_file, workers=2, cache=DecisionCache.create())
    allowed, denied = call("search"), call("drop_db")
    outside = call("read_file", {"path": "/etc/passwd"})
    got = [h.evaluate(c) for c in (allowed, denied, outside)]
    assert [d.verdict for d in got] == ["allow", "deny", "deny"]
    assert all(d.durable for d in got)
    # On disk, fsynced, by the time evaluate() returned.
    logged = by_call(writer)
    for c, decision in zip((allowed, denied, outside), got, strict=True):
        (entry,) = logged[c.call_id]
        assert entry["event"] == "decision"
        assert entry["decision"] == decision.verdict
        assert entry["rule_id"] == decision.rule_id
        assert entry["policy_hash"] == h.pool.policy_hash
        assert entry["transport"] == "http"
        assert entry["method"] == "tools/call"
        assert entry["target"] == c.target
        assert len(entry["args_sha256"]) == 64
        assert entry["latency_us"] >= 0
    assert logged[outside.call_id][0]["pointer"] == "/arguments/path"
    # A cache hit skips the worker, so nobody has written its entry yet: it
    # comes back not durable, for the shell to record.
    again = call("drop_db")
    hit = h.evaluate(again)
    assert hit.cached
    assert not hit.durable
    assert again.call_id not in by_call(writer)
    outcome = verify_files([writer.log_path], [key], check_head=False)
    assert outcome.valid, outcome


def test_dry_run_and_log_params_shape_the_workers_entries(
    policy_file: Path, make_pool: Callable[..., Harness], writer: AuditWriterProcess
) -> None:
    audit = WorkerAudit(str(writer.socket_path), dry_run=True, log_params=True)
    h = make_pool(policy_file, audit, workers=1)
    secret = "AKIA" + "ABCDEFGHIJKLMNOP"
    denied = call("drop_db", {"note": secret})
    decision = h.evaluate(denied)
    assert decision.verdict == "deny"
    assert decision.durable
    (entry,) = by_call(writer)[denied.call_id]
    assert entry["decision"] == "dry_run_deny"
    assert entry["params"]["name"] == "drop_db"
    assert secret not in writer.log_path.read_text()
    assert entry["masked"] == ["/arguments/note"]


def test_a_stopped_writer_refuses_the_call_and_a_resumed_one_serves_again(
    policy_file: Path, make_pool: Callable[..., Harness], writer: AuditWriterProcess
) -> None:
    audit = WorkerAudit(str(writer.socket_path), deadline_s=0.3)
    h = make_pool(policy_file, audit, workers=1, deadline_s=2.0)
    assert h.evaluate(call("search")).durable
    assert writer.pid is not None
    os.kill(writer.pid, signal.SIGSTOP)
    try:
        refused = h.evaluate(call("search"))
    finally:
        os.kill(writer.pid, signal.SIGCONT)
    # An allowed call whose entry is not durable is refused, never allowed.
    assert refused.verdict == "deny"
    assert refused.category == AUDIT_FAILED_CATEGORY
    assert not refused.durable
    assert not refused.cacheable
    assert "did not answer within 0.3 s" in refused.reason
    # The worker dropped its connection (a late ack must not be read as the
    # next call's) and connects again.
    later = call("search")
    decision = h.evaluate(later)
    assert decision.verdict == "allow"
    assert decision.durable
    assert [e["decision"] for e in by_call(writer)[later.call_id]] == ["allow"]


def test_a_dead_writer_is_refused_until_its_restart_is_used(
    policy_file: Path, make_pool: Callable[..., Harness], writer: AuditWriterProcess
) -> None:
    h = make_pool(policy_file, workers=1)
    assert h.evaluate(call("search")).durable
    pid = writer.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    h.wait_for(lambda: not alive(pid))
    refused = h.evaluate(call("search"))
    assert refused.verdict == "deny"
    assert refused.category == AUDIT_FAILED_CATEGORY
    writer.start()  # same socket path, as the supervisor restarts it
    after = call("search")
    decision = h.evaluate(after)
    assert decision.verdict == "allow"
    assert decision.durable
    assert after.call_id in by_call(writer)


def test_workers_of_a_fork_exec_zygote_still_write_their_entries(
    policy_file: Path, make_pool: Callable[..., Harness], writer: AuditWriterProcess
) -> None:
    h = make_pool(policy_file, workers=1, deadline_s=2.0)
    old = h.pool.zygote_pid
    os.kill(old, signal.SIGKILL)
    h.wait_for(lambda: h.pool.health().zygote_alive and h.pool.zygote_pid not in (-1, old), 60)
    (victim,) = h.pool.worker_pids()
    os.kill(victim, signal.SIGKILL)
    h.wait_for(lambda: h.pool.worker_pids() not in ([], [victim]))
    h.wait_for(lambda: h.pool.ready and all(w.ready for w in h.pool.health().workers))
    c = call("search")
    decision = h.evaluate(c)
    assert decision.verdict == "allow"
    assert decision.durable
    assert [e["decision"] for e in by_call(writer)[c.call_id]] == ["allow"]


def test_an_integer_beyond_64_bits_reaches_the_workers_entry_exactly(
    policy_file: Path, make_pool: Callable[..., Harness], writer: AuditWriterProcess
) -> None:
    """msgpack cannot carry it: the call travels to the worker as canonical
    JSON and the entry travels to the writer as JSON, both exact."""
    audit = WorkerAudit(str(writer.socket_path), log_params=True)
    h = make_pool(policy_file, audit, workers=1)
    big = 2**70 + 1
    c = call("search", {"n": big})
    decision = h.evaluate(c)
    assert decision.verdict == "allow"
    assert decision.durable
    (entry,) = [
        e for e in map(json.loads, writer.log_path.read_text().splitlines())
        if e.get("call_id") == c.call_id
    ]  # fmt: skip
    assert entry["params"]["arguments"]["n"] == big


def test_a_worker_goes_on_deciding_while_its_entries_sync_and_answers_in_order(
    policy_file: Path, make_pool: Callable[..., Harness], writer: AuditWriterProcess
) -> None:
    """While the writer holds a batch's entries the worker keeps reading and
    deciding, and sends the next entries at once; every answer, a ping's too,
    waits for the entries before it, and the pool (which kills a worker that
    answers out of order) sees them in order."""
    audit = WorkerAudit(str(writer.socket_path), deadline_s=10.0)
    h = make_pool(policy_file, audit, workers=1, deadline_s=10.0)
    pid = writer.pid
    assert pid is not None
    calls = [call("search") if i % 3 else call("drop_db") for i in range(20)]

    (worker,) = h.pool.worker_pids()

    async def done_with_it(after: int) -> int:
        # The worker went back to sleep: it has read, decided and sent the
        # entries of everything that reached it (the writer cannot answer).
        for _ in range(1000):
            now = sleeps(worker)
            if now > after:
                return now
            await asyncio.sleep(0.01)
        raise AssertionError("the worker never went back to waiting")

    async def scenario() -> tuple[list[Decision], bool]:
        os.kill(pid, signal.SIGSTOP)
        try:
            before = sleeps(worker)
            first = asyncio.ensure_future(h.pool.evaluate(calls[0]))
            after_first = await done_with_it(before)
            # The others reach the worker in one write and are decided while
            # the first entry waits: their entries go out before it is durable.
            rest = [asyncio.ensure_future(h.pool.evaluate(c)) for c in calls[1:]]
            ping = asyncio.ensure_future(h.pool.ping(wait_s=10.0))
            await done_with_it(after_first)
            held = not any(t.done() for t in [first, *rest, ping])
        finally:
            os.kill(pid, signal.SIGCONT)
        decisions = await asyncio.gather(first, *rest)
        await ping
        return decisions, held

    decisions, held = h.run(scenario())
    assert held  # nothing left the worker while its entries were not durable
    assert [d.verdict for d in decisions] == ["deny" if i % 3 == 0 else "allow" for i in range(20)]
    assert all(d.durable for d in decisions)
    assert h.pool.metrics().worker_restarts == 0
    logged = by_call(writer)
    assert all(len(logged[c.call_id]) == 1 for c in calls)
    # Every entry was already at the stopped writer when it resumed, so one
    # commit sealed them all (a batch shares one ts): the worker did not wait
    # for the first entry's ack before deciding the others.
    assert len({logged[c.call_id][0]["ts"] for c in calls}) == 1
