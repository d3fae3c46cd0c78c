"""EvaluatorPool with real forked workers, the real policy, and real faults:
kill -9 mid-call, stopped (hung) workers, a dead zygote, reloads that work and
reloads that fail, the decision cache and the rate limiter."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
import uvloop

from agentwall.cache.ratelimit import RateLimiter
from agentwall.cache.shm import DecisionCache
from agentwall.core.canonical import canonical_json
from agentwall.errors import PolicyError
from agentwall.io.pool import EvaluatorPool
from agentwall.policy import evaluate, load_policy
from agentwall.types import Call, Decision, Identity

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
T = TypeVar("T")

POLICY = """
version: "2"
default_action: deny
tools:
  - name: read_file
    action: allow
    parameters:
      - {name: path, type: string, required: true, within: ["/workspace"]}
  - name: search
    action: allow
  - name: drop_db
    action: deny
  - name: deploy
    action: allow
    identity: {subjects: [alice]}
"""

POLICY_V2 = POLICY.replace(
    "  - name: drop_db\n    action: deny", "  - name: drop_db\n    action: allow"
)

RATED = """
version: "2"
default_action: deny
session: {max_calls_per_second: 2, burst: 2}
tools:
  - name: search
    action: allow
  - name: fetch
    action: allow
    rate_limit: {calls_per_second: 1, burst: 1}
"""

_ids = iter(range(1, 1 << 30))


def call(
    tool: str,
    arguments: Any = None,
    *,
    session: str = "s1",
    identity: Identity | None = None,
    method: str = "tools/call",
) -> Call:
    params: dict[str, Any] = {"name": tool, "arguments": arguments or {}}
    n = next(_ids)
    return Call(
        call_id=f"call-{n}",
        session=session,
        transport="http",
        origin="client",
        kind="request",
        rpc_id=n,
        method=method,
        target=tool,
        params=params,
        params_json=canonical_json(params),
        identity=identity,
    )


def foreign_threads() -> bool:
    """Threads another test left behind in this pytest process.  The pool
    refuses to fork with threads around (tested below); elsewhere such
    leftovers, idle by then, must not fail tests that are about something else."""
    return threading.active_count() > 1


def same(a: Decision, b: Decision) -> bool:
    return msgspec.structs.replace(a, eval_ns=0) == msgspec.structs.replace(b, eval_ns=0)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


class Harness:
    """A started pool plus the uvloop it is attached to."""

    def __init__(self, pool: EvaluatorPool) -> None:
        self.pool = pool
        self.runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        self.run(pool.attach())

    def run(self, coro: Awaitable[T]) -> T:
        async def wrapper() -> T:
            return await coro

        return self.runner.run(wrapper())

    def evaluate(self, c: Call) -> Decision:
        return self.run(self.pool.evaluate(c))

    def wait_for(self, predicate: Callable[[], bool], seconds: float = 20.0) -> None:
        async def poll() -> None:
            deadline = time.monotonic() + seconds
            while not predicate():
                if time.monotonic() > deadline:
                    raise AssertionError(f"condition not met within {seconds}s")
                await asyncio.sleep(0.02)

        self.run(poll())

    def close(self) -> None:
        try:
            self.run(self.pool.close(drain_s=2.0))
        finally:
            self.pool.terminate()
            self.runner.close()


@pytest.fixture
def make_pool() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(path: Path | None, **kwargs: Any) -> Harness:
        kwargs.setdefault("unsafe_allow_threads", foreign_threads())
        harness = Harness(EvaluatorPool.start(path, **kwargs))
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


def test_decisions_are_exactly_the_policy_evaluators(
    policy_file: Path, make_pool: Callable[..., Harness]
) -> None:
    h = make_pool(policy_file, workers=2)
    local = load_policy(policy_file)
    assert h.pool.policy_hash == local.hash
    calls = [
        call("read_file", {"path": "/workspace/a.txt"}),
        call("read_file", {"path": "/etc/shadow"}),
        call("drop_db"),
        call("unknown_tool"),
        call("search", {"q": "x" * 200, "n": [1, 2.5, None, True]}),
        call("search", {"big": 2**70}),  # travels as JSON: msgpack stops at 64 bits
        call("search", {"url": "http://169.254.169.254/latest/meta-data"}),
    ]
    for c in calls:
        got = h.evaluate(c)
        want = evaluate(local, c, time.time_ns())
        assert same(got, want), (c.target, got, want)
        assert not got.cached
    verdicts = [h.evaluate(c).verdict for c in calls[:4]]
    assert verdicts == ["allow", "deny", "deny", "deny"]


def test_health_reports_each_workers_policy_hash(
    policy_file: Path, make_pool: Callable[..., Harness]
) -> None:
    h = make_pool(policy_file, workers=3)
    health = h.run(h.pool.ping())
    assert health.ready
    assert health.zygote_alive
    assert len(health.workers) == 3
    assert {w.policy_hash for w in health.workers} == {h.pool.policy_hash}
    assert len({w.pid for w in health.workers}) == 3
    assert os.getpid() not in {w.pid for w in health.workers}


def test_cache_hit_skips_the_worker(policy_file: Path, make_pool: Callable[..., Harness]) -> None:
    cache = DecisionCache.create(slots=1024)
    h = make_pool(policy_file, workers=1, cache=cache)
    first = h.evaluate(call("read_file", {"path": "/workspace/a"}))
    before = h.run(h.pool.ping()).workers[0].evaluated
    again = call("read_file", {"path": "/workspace/a"})
    hit = h.evaluate(again)
    assert hit.cached
    assert hit.call_id == again.call_id
    assert same(msgspec.structs.replace(hit, cached=False, call_id=first.call_id), first)
    assert h.run(h.pool.ping()).workers[0].evaluated == before  # no worker asked
    m = h.pool.metrics()
    assert (m.cache_hits, m.cache_misses) == (1, 1)
    # Different arguments, different entry.
    assert not h.evaluate(call("read_file", {"path": "/workspace/b"})).cached


def test_identity_dependent_decisions_are_not_cached(
    policy_file: Path, make_pool: Callable[..., Harness]
) -> None:
    cache = DecisionCache.create(slots=1024)
    h = make_pool(policy_file, workers=1, cache=cache)
    alice = Identity(subject="alice", issuer="https://idp", claims_class="c1")
    first = h.evaluate(call("deploy", identity=alice))
    assert first.verdict == "allow"
    assert not first.cacheable
    assert not h.evaluate(call("deploy", identity=alice)).cached
    assert cache.stats().stores == 0


def test_cache_switched_off(policy_file: Path, make_pool: Callable[..., Harness]) -> None:
    cache = DecisionCache.create(slots=1024, enabled=False)
    h = make_pool(policy_file, workers=1, cache=cache)
    for _ in range(3):
        assert not h.evaluate(call("search")).cached
    assert cache.stats().stores == 0


def test_kill_9_mid_call_denies_it_and_respawns(
    policy_file: Path, make_pool: Callable[..., Harness]
) -> None:
    h = make_pool(policy_file, workers=1, deadline_s=10.0)
    (victim,) = h.pool.worker_pids()
    os.kill(victim, signal.SIGSTOP)  # the call will sit in the worker's socket

    async def call_then_kill() -> Decision:
        task = asyncio.ensure_future(h.pool.evaluate(call("search")))
        await asyncio.sleep(0.1)
        assert not task.done()
        os.kill(victim, signal.SIGKILL)
        return await task

    decision = h.run(call_then_kill())
    assert decision.verdict == "deny"
    assert decision.category == "evaluator_crash"
    assert decision.rule_id == "pool.worker_died"
    assert str(victim) in decision.reason
    assert "died" in decision.reason
    assert not decision.cacheable
    h.wait_for(lambda: h.pool.ready and h.pool.worker_pids() not in ([], [victim]))
    (replacement,) = h.pool.worker_pids()
    assert replacement != victim
    assert h.evaluate(call("search")).verdict == "allow"
    assert h.pool.metrics().worker_restarts == 1


def test_timeout_is_a_deny_and_late_replies_are_dropped(
    policy_file: Path, make_pool: Callable[..., Harness]
) -> None:
    h = make_pool(policy_file, workers=1, deadline_s=0.3, hang_s=30.0)
    (pid,) = h.pool.worker_pids()
    os.kill(pid, signal.SIGSTOP)
    try:
        slow = h.evaluate(call("search"))
    finally:
        os.kill(pid, signal.SIGCONT)
    assert slow.verdict == "deny"
    assert slow.category == "evaluator_timeout"
    assert "300 ms" in slow.reason
    # The late answer to the timed-out call is discarded; the next call gets its own.
    c = call("drop_db")
    assert h.evaluate(c).call_id == c.call_id
    assert h.evaluate(call("search")).verdict == "allow"
    assert h.pool.worker_pids() == [pid]


def test_hung_worker_is_killed_and_replaced(
    policy_file: Path, make_pool: Callable[..., Harness]
) -> None:
    h = make_pool(policy_file, workers=1, deadline_s=0.2, hang_s=0.6)
    (pid,) = h.pool.worker_pids()
    os.kill(pid, signal.SIGSTOP)
    assert h.evaluate(call("search")).category == "evaluator_timeout"
    h.wait_for(lambda: h.pool.ready and h.pool.worker_pids() not in ([], [pid]))
    h.wait_for(lambda: not alive(pid))
    assert h.evaluate(call("search")).verdict == "allow"


def test_all_workers_dead_denies_until_one_is_back(
    policy_file: Path, make_pool: Callable[..., Harness]
) -> None:
    h = make_pool(policy_file, workers=2, deadline_s=5.0)
    pids = h.pool.worker_pids()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    # Both deaths noticed (the replacements may even be up already).
    h.wait_for(lambda: not h.pool.ready or not set(pids) & set(h.pool.worker_pids()))
    # A call arriving now waits (up to its deadline) for a replacement.
    decision = h.evaluate(call("search"))
    assert decision.verdict == "allow", decision
    h.wait_for(lambda: len(h.pool.worker_pids()) == 2)
    assert not set(pids) & set(h.pool.worker_pids())


def test_reload_swaps_the_policy_everywhere(
    policy_file: Path, make_pool: Callable[..., Harness]
) -> None:
    cache = DecisionCache.create(slots=1024)
    h = make_pool(policy_file, workers=2, cache=cache)
    old = h.pool.policy_hash
    assert h.evaluate(call("drop_db")).verdict == "deny"
    assert h.evaluate(call("drop_db")).cached
    policy_file.write_text(POLICY_V2)
    result = h.run(h.pool.reload())
    assert result.ok
    assert result.changed
    assert result.previous_hash == old
    assert result.policy_hash == load_policy(policy_file).hash == h.pool.policy_hash
    health = h.run(h.pool.ping())
    assert {w.policy_hash for w in health.workers} == {result.policy_hash}
    # The old cache entry is never asked for again: the key has the policy hash.
    after = h.evaluate(call("drop_db"))
    assert after.verdict == "allow"
    assert not after.cached
    # A worker forked after the reload runs the new policy too.
    victim = h.pool.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    h.wait_for(lambda: len(h.pool.worker_pids()) == 2 and victim not in h.pool.worker_pids())
    h.wait_for(lambda: h.pool.health().workers[0].ready)
    assert {w.policy_hash for w in h.run(h.pool.ping()).workers} == {result.policy_hash}


def test_failed_reload_keeps_the_old_policy_and_says_why(
    policy_file: Path, make_pool: Callable[..., Harness]
) -> None:
    h = make_pool(policy_file, workers=2)
    old = h.pool.policy_hash
    policy_file.write_text(POLICY + "  - name: broken\n    action: maybe\n")
    result = h.run(h.pool.reload())
    assert not result.ok
    assert result.policy_hash == old
    assert result.error is not None
    assert "policy.yaml:" in result.error
    assert h.pool.policy_hash == old
    assert {w.policy_hash for w in h.run(h.pool.ping()).workers} == {old}
    assert h.evaluate(call("drop_db")).verdict == "deny"
    missing = h.run(h.pool.reload(policy_file.with_name("nope.yaml")))
    assert not missing.ok
    assert missing.error
    m = h.pool.metrics()
    assert (m.reloads_ok, m.reloads_failed) == (0, 2)


def test_rate_limits_deny_with_retry_hint_and_are_never_cached(
    tmp_path: Path, make_pool: Callable[..., Harness]
) -> None:
    path = tmp_path / "rated.yaml"
    path.write_text(RATED)
    cache = DecisionCache.create(slots=1024)
    limiter = RateLimiter.create(buckets=256)
    h = make_pool(path, workers=1, cache=cache, rate_limiter=limiter)
    verdicts = [h.evaluate(call("search", session="a")) for _ in range(3)]
    assert [d.verdict for d in verdicts] == ["allow", "allow", "deny"]
    refused = verdicts[2]
    assert refused.category == "rate_limit"
    assert refused.rule_id == "rate_limit.session"
    assert refused.retry_after_ms is not None
    assert 1 <= refused.retry_after_ms <= 600
    assert not refused.cacheable
    assert not refused.cached
    assert verdicts[1].cached  # the policy decision was cached; the rate check was not
    # Another session has its own bucket; the tool bucket is shared by all.
    assert h.evaluate(call("fetch", session="b")).verdict == "allow"
    tool_refused = h.evaluate(call("fetch", session="c"))
    assert tool_refused.rule_id == "rate_limit.tool"
    # Not a tools/call: no rate limit.
    assert h.evaluate(call("", method="tools/list", session="a")).category != "rate_limit"
    assert h.pool.metrics().pool_denials["rate_limit"] == 2


def test_client_limit_spans_sessions_and_is_never_cached(
    tmp_path: Path, make_pool: Callable[..., Harness]
) -> None:
    path = tmp_path / "client.yaml"
    path.write_text(RATED + "client: {max_calls_per_second: 0.01, burst: 3}\n")
    cache = DecisionCache.create(slots=1024)
    limiter = RateLimiter.create(buckets=256)
    h = make_pool(path, workers=1, cache=cache, rate_limiter=limiter)

    def as_client(c: Call, client: str | None) -> Call:
        return msgspec.structs.replace(c, client=client)

    # One client, a fresh session per call: each session bucket is full, the
    # client bucket (burst 3) is not.
    got = [
        h.evaluate(as_client(call("search", session=f"s{i}"), "peer:10.0.0.1")) for i in range(4)
    ]
    assert [d.verdict for d in got] == ["allow", "allow", "allow", "deny"]
    assert got[2].cached  # the policy decision is cached; the client check is not
    refused = got[3]
    assert (refused.category, refused.rule_id) == ("rate_limit", "rate_limit.client")
    assert refused.retry_after_ms is not None
    assert refused.retry_after_ms > 1000
    assert not refused.cacheable
    assert not refused.cached
    assert "client rate limit of 0.01 calls/s" in refused.reason
    # Another client is untouched.
    assert h.evaluate(as_client(call("search", session="s9"), "peer:10.0.0.2")).verdict == "allow"
    # A call that names no client is its own session's client.
    assert h.evaluate(call("search", session="lone")).verdict == "allow"
    # Reloaded without the key: back to per-session buckets only.
    path.write_text(RATED)
    assert h.run(h.pool.reload()).ok
    again = h.evaluate(as_client(call("search", session="s10"), "peer:10.0.0.1"))
    assert again.verdict == "allow"


def test_overload_is_a_fast_deny(policy_file: Path, make_pool: Callable[..., Harness]) -> None:
    h = make_pool(policy_file, workers=1, max_queue_per_worker=2, deadline_s=5.0)
    (pid,) = h.pool.worker_pids()
    os.kill(pid, signal.SIGSTOP)

    async def flood() -> list[Decision]:
        tasks = [asyncio.ensure_future(h.pool.evaluate(call("search"))) for _ in range(4)]
        await asyncio.sleep(0.2)
        os.kill(pid, signal.SIGCONT)
        return list(await asyncio.gather(*tasks))

    decisions = h.run(flood())
    assert [d.verdict for d in decisions[:2]] == ["allow", "allow"]
    assert [d.category for d in decisions[2:]] == ["overload", "overload"]


def test_dead_zygote_is_replaced_by_fork_exec(
    policy_file: Path, make_pool: Callable[..., Harness]
) -> None:
    h = make_pool(policy_file, workers=2, deadline_s=2.0)
    old = h.pool.zygote_pid
    os.kill(old, signal.SIGKILL)
    assert h.evaluate(call("search")).verdict == "allow"  # workers keep serving
    h.wait_for(lambda: h.pool.health().zygote_alive and h.pool.zygote_pid not in (-1, old), 60)
    h.wait_for(lambda: not alive(old))  # and the dead one was reaped
    with open(f"/proc/{h.pool.zygote_pid}/cmdline", "rb") as f:
        assert b"agentwall.io.worker" in f.read()
    victim = h.pool.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    h.wait_for(lambda: len(h.pool.worker_pids()) == 2 and victim not in h.pool.worker_pids())
    h.wait_for(lambda: h.pool.ready and all(w.ready for w in h.pool.health().workers))
    assert {w.policy_hash for w in h.run(h.pool.ping()).workers} == {h.pool.policy_hash}
    assert h.evaluate(call("search")).verdict == "allow"
    assert h.evaluate(call("drop_db")).verdict == "deny"


def test_replacement_zygote_refuses_a_changed_policy_until_reload(
    policy_file: Path, make_pool: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    h = make_pool(policy_file, workers=1, deadline_s=2.0)
    policy_file.write_text(POLICY_V2)  # changed on disk, not reloaded
    old = h.pool.zygote_pid
    os.kill(old, signal.SIGKILL)
    # A replacement loads V2, reports its hash, and is refused.
    h.wait_for(lambda: "was loaded); stopping it" in caplog.text, 60)
    h.run(asyncio.sleep(0.5))
    assert not h.pool.health().zygote_alive
    assert h.evaluate(call("drop_db")).verdict == "deny"  # the running policy still rules
    result = h.run(h.pool.reload())
    assert result.ok
    assert result.changed
    h.wait_for(lambda: h.pool.health().zygote_alive, 60)
    assert h.evaluate(call("drop_db")).verdict == "allow"
    (pid,) = h.pool.worker_pids()
    os.kill(pid, signal.SIGKILL)
    h.wait_for(lambda: h.pool.ready and h.pool.worker_pids() not in ([], [pid]))
    assert h.evaluate(call("drop_db")).verdict == "allow"


def test_metrics_and_prometheus_text(policy_file: Path, make_pool: Callable[..., Harness]) -> None:
    h = make_pool(policy_file, workers=1, cache=DecisionCache.create(slots=256))
    for _ in range(3):
        h.evaluate(call("search"))
    h.evaluate(call("drop_db"))
    m = h.pool.metrics()
    assert m.calls == 4
    assert m.decisions == {"allow": 3, "deny": 1}
    assert m.latency_counts[-1] == 4
    text = h.pool.prometheus()
    assert 'agentwall_decisions_total{verdict="allow"} 3' in text
    assert "agentwall_decision_cache_hits_total 2" in text
    assert 'agentwall_evaluate_latency_seconds_bucket{le="+Inf"} 4' in text


def test_close_stops_every_process(policy_file: Path) -> None:
    pool = EvaluatorPool.start(policy_file, workers=2, unsafe_allow_threads=foreign_threads())
    h = Harness(pool)
    pids = [*pool.worker_pids(), pool.zygote_pid]
    h.close()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(alive(p) for p in pids)
    assert not pool.ready


def test_start_refuses_a_bad_policy(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: '2'\ndefault_action: perhaps\n")
    with pytest.raises(PolicyError) as err:
        EvaluatorPool.start(path, workers=1, unsafe_allow_threads=foreign_threads())
    assert "bad.yaml:2" in err.value.diagnostics()


def test_start_refuses_to_fork_late(policy_file: Path) -> None:
    async def inside_loop() -> None:
        EvaluatorPool.start(policy_file, workers=1)

    with pytest.raises(RuntimeError, match="event loop"):
        asyncio.run(inside_loop())
    # Other tests may leave idle threads in this process, so the thread refusal is
    # checked in a fresh interpreter, where the only extra thread is the one we start.
    script = textwrap.dedent(
        f"""
        import threading
        from agentwall.io.pool import EvaluatorPool
        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()
        try:
            EvaluatorPool.start({str(policy_file)!r}, workers=1)
        except RuntimeError as exc:
            print("refused:", exc)
        else:
            print("forked with a thread running")
        stop.set()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert "refused:" in done.stdout, done.stdout + done.stderr
    assert "thread" in done.stdout


def test_safe_mode_only_without_a_policy(make_pool: Callable[..., Harness]) -> None:
    h = make_pool(None, workers=1)
    assert h.evaluate(call("anything", {"x": "hello"})).verdict == "allow"
    assert h.evaluate(call("anything", {"x": "/home/u/.ssh/id_rsa"})).verdict == "deny"


def open_files(pid: int) -> list[str]:
    names = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        # The directory listing's own descriptor is gone by now.
        with contextlib.suppress(FileNotFoundError):
            names.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return names


def test_workers_hold_none_of_the_supervisors_descriptors(
    policy_file: Path, make_pool: Callable[..., Harness]
) -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        h = make_pool(policy_file, workers=2, cache=DecisionCache.create(slots=64))
        mine = set(open_files(os.getpid()))
        for pid in [h.pool.zygote_pid, *h.pool.worker_pids()]:
            held = open_files(pid)
            # stdio, its own channel and nothing else of ours (libuv's at-fork
            # hook gives a forked child a fresh private pipe pair: not ours).
            sockets = [name for name in held if name.startswith("socket:")]
            assert len(sockets) == 1, (pid, held)
            inherited = set(held[3:]) & mine - {name for name in held if name.startswith("pipe:")}
            assert not inherited, (pid, held)
            assert not any("agentwall" in name or "memfd" in name for name in held), held
    finally:
        listener.close()


def faulty_evaluate(policy: Any, c: Call, now_ns: int) -> Decision:
    """The real evaluator, except for three tools that misbehave in the worker."""
    if c.target == "boom":
        raise ZeroDivisionError("evaluator bug")
    if c.target == "liar":
        return msgspec.structs.replace(evaluate(policy, c, now_ns), call_id="someone-else")
    if c.target == "garbage":
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                    os.write(int(fd), b"\x00\x00\x00\x03\xc1\xc1\xc1")  # not msgpack
    return evaluate(policy, c, now_ns)


def test_misbehaving_evaluator_is_denied_never_trusted(
    policy_file: Path, make_pool: Callable[..., Harness]
) -> None:
    from agentwall.io.worker import PolicyEngine

    h = make_pool(policy_file, workers=1, engine=PolicyEngine(load_policy, faulty_evaluate))
    boom = h.evaluate(call("boom"))
    assert boom.verdict == "deny"
    assert boom.category == "evaluator_error"
    assert "ZeroDivisionError" in boom.reason
    liar = h.evaluate(call("liar"))
    assert liar.verdict == "deny"
    assert liar.category == "evaluator_error"
    (pid,) = h.pool.worker_pids()
    garbage = h.evaluate(call("garbage"))
    assert garbage.verdict == "deny"  # its channel is corrupt: killed, call denied
    assert garbage.category in ("evaluator_crash", "evaluator_error")
    h.wait_for(lambda: h.pool.ready and h.pool.worker_pids() not in ([], [pid]))
    assert h.evaluate(call("search")).verdict == "allow"


def test_queued_calls_each_time_out_at_their_own_deadline(
    policy_file: Path, make_pool: Callable[..., Harness]
) -> None:
    # One deadline timer per worker serves its whole queue, re-armed as it
    # fires: each call is denied at its own deadline, and a call queued after
    # the timer last fired still gets one.
    h = make_pool(policy_file, workers=1, deadline_s=0.4, hang_s=30.0)
    (pid,) = h.pool.worker_pids()
    os.kill(pid, signal.SIGSTOP)

    async def staggered() -> list[tuple[float, float, Decision]]:
        loop = asyncio.get_running_loop()

        async def timed(delay: float) -> tuple[float, float, Decision]:
            await asyncio.sleep(delay)
            start = loop.time()
            decision = await h.pool.evaluate(call("search"))
            return start, loop.time(), decision

        return list(await asyncio.gather(timed(0.0), timed(0.25), timed(1.0)))

    try:
        results = h.run(staggered())
    finally:
        os.kill(pid, signal.SIGCONT)
    for start, end, decision in results:
        assert decision.category == "evaluator_timeout"
        assert end - start >= 0.39, (start, end)
    assert results[0][1] < results[1][1] < results[2][1]
