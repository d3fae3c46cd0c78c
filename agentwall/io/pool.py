"""The evaluator pool: pre-forked policy workers behind an asyncio front.

Construction, in two steps because of fork (see ``agentwall.io.worker``)::

    # In the supervisor, before any event loop or thread exists:
    cache = DecisionCache.create()              # optional; None = no cache
    limiter = RateLimiter.create()              # optional; None = no rate limits
    pool = EvaluatorPool.start(
        "policy.yaml", workers=4, cache=cache, rate_limiter=limiter, deadline_s=1.0
    )                                           # raises PolicyError if it does not load

    # Then inside the (uv)loop:
    await pool.attach()                         # wires the workers in, waits until ready
    decision = await pool.evaluate(call)        # the Evaluator protocol: never raises
    result = await pool.reload("policy.yaml")   # SIGHUP: atomic swap or old policy kept
    pool.ready, pool.health(), pool.metrics(), pool.prometheus()
    await pool.close()                          # drains in-flight calls, stops workers

``start`` loads and compiles the policy, then forks the zygote, which forks
the N workers: every worker inherits the compiled policy.  ``attach`` must run
in the loop that will call ``evaluate``.

What ``evaluate`` does, in order:

1. rate limits (``tools/call`` requests from the client, when the policy gives
   a client, session or tool rate; the client bucket is keyed by
   ``Call.client``, else the session): a refusal is a deny with
   ``category="rate_limit"``, ``rule_id`` ``rate_limit.client``,
   ``rate_limit.session`` or ``rate_limit.tool`` and ``retry_after_ms``; the
   front-end answers it with -32029.  Never cached.
2. the decision cache: a hit is returned with ``cached=True`` and no worker is
   asked.  **The caller must still write the audit entry for it** (with
   ``cached=True``): a hit skips evaluation, never the audit log.
3. a worker: the least-loaded ready one gets an ``EvalRequest`` naming the
   policy hash to judge under; its ``EvalReply`` is exactly
   ``agentwall.policy.evaluate(policy, call, now_ns)``.  Cacheable replies are
   stored in the cache.

Every failure is a deny with ``cacheable=False``, a reason that says what
happened, and one of these categories (``rule_id`` in brackets):

* ``evaluator_timeout`` [pool.timeout]: no answer within ``deadline_s``;
* ``evaluator_crash`` [pool.worker_died]: the worker died with the call in
  flight; it is replaced by a fresh fork of the zygote;
* ``evaluator_unavailable`` [pool.unavailable]: no ready worker within the
  deadline (all dead and respawning), or the pool is closing;
* ``overload`` [pool.overloaded]: every worker already has
  ``max_queue_per_worker`` calls queued;
* ``evaluator_error`` [pool.error]: the evaluator raised, or answered
  something that does not fit the request.

A worker whose oldest unanswered request is older than ``hang_s`` is killed
(SIGKILL through its pidfd) and replaced.  Workers report the policy hash they
run in ``Pong``; ``health()`` shows it per worker.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import msgspec

from agentwall.cache.ratelimit import PolicyRates, RateLimiter
from agentwall.cache.shm import DecisionCache
from agentwall.errors import FrameError
from agentwall.io import worker as wire
from agentwall.io.contracts import AUDIT_FAILED_CATEGORY
from agentwall.io.deadline import DeadlineTimer
from agentwall.io.pool_records import (
    PoolHealth as PoolHealth,
)
from agentwall.io.pool_records import (
    PoolMetrics as PoolMetrics,
)
from agentwall.io.pool_records import (  # re-exported: importers use pool.<Name>
    ReloadResult as ReloadResult,
)
from agentwall.io.pool_records import (
    WorkerStatus as WorkerStatus,
)
from agentwall.io.worker import (
    PolicyEngine,
    PolicyState,
    WorkerAudit,
    default_engine,
    describe_error,
)
from agentwall.ipc.wire import FrameDecoder, encode_frame
from agentwall.types import Call, Decision

log = logging.getLogger("agentwall.pool")

LATENCY_BUCKETS_US: Final = (
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    100_000,
    1_000_000,
)
_MAX_BACKOFF_S: Final = 5.0
_STABLE_S: Final = 10.0


# Results a pending call can end with besides the worker's own reply.
@dataclass(frozen=True, slots=True)
class _Failure:
    category: str
    rule_id: str
    reason: str


@dataclass(slots=True)
class _Pending:
    id: int
    sent_ns: int
    future: asyncio.Future[Any] | None
    timer: asyncio.TimerHandle | None = None  # a control message's own timer
    deadline: float = 0.0  # an evaluation's (loop time); 0: none, or already failed


class _Worker(asyncio.Protocol):
    """The parent's end of one worker's channel.  The worker answers strictly
    in order, so pending requests form a queue."""

    def __init__(self, pool: EvaluatorPool, slot: int, pid: int, pidfd: int) -> None:
        self.pool = pool
        self.slot = slot
        self.pid = pid
        self.pidfd = pidfd
        self.transport: asyncio.Transport | None = None
        self.pending: deque[_Pending] = deque()
        self.frames = FrameDecoder()
        self.alive = True
        self.ready = False
        self.policy_hash = ""
        self.evaluated = 0
        self.born = time.monotonic()
        self._out: list[bytes] = []
        self._deadlines: DeadlineTimer | None = None  # made on first use, on the pool's loop

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; duck-typed.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            payloads = self.frames.feed(data)
            for payload in payloads:
                self._deliver(self.pool._from_worker.decode(payload))
        except (FrameError, msgspec.DecodeError, _ProtocolError) as exc:
            self.pool._kill(self, f"protocol error: {exc}")

    def _deliver(self, msg: Any) -> None:
        if not self.pending:
            raise _ProtocolError(f"unsolicited {type(msg).__name__}")
        entry = self.pending[0]
        if entry.id != msg.id:
            # Left queued: killing the worker denies it with the others.
            raise _ProtocolError(f"reply {msg.id} to request {entry.id}")
        self.pending.popleft()
        if entry.timer is not None:
            entry.timer.cancel()
        if isinstance(msg, wire.Pong):
            self.policy_hash = msg.policy_hash
            self.evaluated = msg.evaluated
        if entry.future is not None and not entry.future.done():
            entry.future.set_result(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool._worker_lost(self)

    def send(self, msg_id: int, frame: bytes, future: asyncio.Future[Any] | None) -> _Pending:
        """Sends one encoded frame whose message carries ``msg_id``: at once
        to an idle worker, else with the others queued in this event-loop
        turn, in one write.

        Each write is a syscall that wakes the worker, and on this VM the
        front-end spent ~17% of its time in them at 64 clients (py-spy).
        Coalescing per turn cut the proxy's CPU per call by ~15% (380 -> 324
        and 348 -> 287 us, `agentwall bench` at 64 clients, echo_tiny,
        interleaved runs) at equal or better throughput.  (An earlier
        micro-benchmark, bench/bench_pool.py alone, had shown no gain: there
        the worker, not the parent's syscalls, was the bottleneck.)
        """
        assert self.transport is not None
        entry = _Pending(msg_id, time.monotonic_ns(), future)
        out = self._out
        if not out and not self.pending:
            # An idle worker: nothing to coalesce with, so send now rather
            # than a loop turn later (a lone caller's latency).
            self.transport.write(frame)
        else:
            out.append(frame)
            if len(out) == 1:
                asyncio.get_running_loop().call_soon(self._flush)
        self.pending.append(entry)
        return entry

    def fail_at(self, entry: _Pending, deadline: float) -> None:
        """Denies ``entry``'s call at ``deadline`` (loop time) unless answered.
        One timer serves the worker's whole queue (agentwall/io/deadline.py)."""
        entry.deadline = deadline
        timers = self._deadlines
        if timers is None:
            loop = self.pool._loop
            assert loop is not None
            timers = self._deadlines = DeadlineTimer(loop, self._deadlines_due)
        timers.fire_by(deadline)

    def _deadlines_due(self) -> None:
        loop = self.pool._loop
        timers = self._deadlines
        if loop is None or timers is None or not self.alive:
            return
        now = loop.time()
        # Deadlines are set before a call waits for a ready worker, so the
        # queue is not quite in deadline order: look at every entry.
        earliest = 0.0
        for entry in self.pending:
            deadline = entry.deadline
            if not deadline:
                continue
            if deadline <= now:
                entry.deadline = 0.0
                if entry.future is not None:
                    _fail(entry.future, self.pool._timeout_failure)
            elif not earliest or deadline < earliest:
                earliest = deadline
        if earliest:
            timers.fire_by(earliest)

    def stop_deadlines(self) -> None:
        if self._deadlines is not None:
            self._deadlines.cancel()

    def _flush(self) -> None:
        out = self._out
        transport = self.transport
        if out and self.alive and transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        # A dead worker's queued calls are denied by _worker_lost, not sent.
        out.clear()


class _ProtocolError(Exception):
    pass


def _with_id(msg: Any, new_id: int) -> Any:
    return msgspec.structs.replace(msg, id=new_id)


def _fail(future: asyncio.Future[Any], failure: _Failure) -> None:
    if not future.done():
        future.set_result(failure)


def _remove_reader(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    # Through Any: typeshed says remove_reader returns bool, uvloop returns
    # None, and compiled (mypyc) code checks the declared type at run time.
    cast(Any, loop).remove_reader(fd)


class EvaluatorPool:
    """Implements ``agentwall.io.contracts.Evaluator`` with pre-forked workers."""

    def __init__(
        self,
        *,
        engine: PolicyEngine,
        policy: Any,
        policy_path: str | None,
        workers: int,
        cache: DecisionCache | None,
        rate_limiter: RateLimiter | None,
        deadline_s: float,
        hang_s: float | None,
        max_queue_per_worker: int,
        reload_timeout_s: float,
        audit: WorkerAudit | None = None,
    ) -> None:
        self._engine = engine
        self.audit = audit
        self._policy = policy
        self._hash: str = policy.hash
        self.policy_path = policy_path
        self.workers_wanted = workers
        self.cache = cache
        self.rate_limiter = rate_limiter
        self.deadline_s = deadline_s
        # A worker that writes its own entries answers once they are durable:
        # its deadline covers the evaluation and the entry's own deadline.
        self.answer_s = deadline_s + (audit.deadline_s if audit is not None else 0.0)
        self.hang_s = hang_s if hang_s is not None else max(2.0, 4 * self.answer_s)
        self.max_queue_per_worker = max_queue_per_worker
        self.reload_timeout_s = reload_timeout_s
        self._timeout_failure = _Failure(
            "evaluator_timeout",
            "pool.timeout",
            f"evaluator did not answer within {deadline_s * 1000:g} ms; denied"
            if audit is None
            else f"evaluator did not answer within {self.answer_s * 1000:g} ms "
            "(evaluation and its audit entry); denied",
        )

        self._encoder = msgspec.msgpack.Encoder()
        self._from_worker = msgspec.msgpack.Decoder(wire.FromWorker)
        self._from_zygote = msgspec.msgpack.Decoder(wire.FromZygote)
        self._ids = 0

        self._zygote_pid = -1
        self._zygote_pidfd = -1
        self._zygote_proc: subprocess.Popen[bytes] | None = None  # a restarted (exec'd) one
        self._zygote_born = time.monotonic()
        self._zygote_backoff = 0.0
        self._zygote_restarts = 0
        # Dead zygotes not yet reaped: (pid, pidfd, Popen or None).
        self._retired: list[tuple[int, int, subprocess.Popen[bytes] | None]] = []
        self._control: socket.socket | None = None
        # The control channel is open / the zygote has proved it runs our policy.
        self._zygote_alive = False
        self._zygote_verified = False
        self._control_waiters: deque[asyncio.Future[tuple[Any, list[int]]]] = deque()
        self._control_frames = FrameDecoder()

        self._spawned: list[tuple[int, int, int, socket.socket]] = []  # before attach
        self._workers: list[_Worker | None] = [None] * workers
        self._rr = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._control_lock: asyncio.Lock | None = None
        self._ready_event: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._backoff = [0.0] * workers
        self._closing = False
        self._closed = False

        self._rates = PolicyRates(self._policy)

        self.calls = 0
        self._decisions: dict[str, int] = {}
        self._pool_denials: dict[str, int] = {}
        self._latency_counts = [0] * (len(LATENCY_BUCKETS_US) + 1)
        self._latency_sum_us = 0.0
        self.worker_restarts = 0
        self.reloads_ok = 0
        self.reloads_failed = 0

    # ------------------------------------------------------------ start-up

    @classmethod
    def start(
        cls,
        policy_path: str | Path | None,
        *,
        workers: int = 2,
        cache: DecisionCache | None = None,
        rate_limiter: RateLimiter | None = None,
        deadline_s: float = 1.0,
        hang_s: float | None = None,
        max_queue_per_worker: int = 1024,
        reload_timeout_s: float = 30.0,
        engine: PolicyEngine | None = None,
        unsafe_allow_threads: bool = False,
        audit: WorkerAudit | None = None,
    ) -> EvaluatorPool:
        """Loads the policy and forks the zygote and ``workers`` workers.

        Must run before any event loop runs or any other thread exists in this
        process (fork copies only the calling thread; locks held by others would
        stay locked in the children).  Raises ``PolicyError`` when the policy
        does not load, and ``RuntimeError`` when called too late.
        """
        if workers < 1:
            raise ValueError("need at least one worker")
        if not deadline_s > 0:
            raise ValueError("deadline_s must be positive")
        _check_fork_is_safe(unsafe_allow_threads)
        engine = engine or default_engine()
        path = None if policy_path is None else str(policy_path)
        policy = engine.load(path)
        pool = cls(
            engine=engine,
            policy=policy,
            policy_path=path,
            workers=workers,
            cache=cache,
            rate_limiter=rate_limiter,
            deadline_s=deadline_s,
            hang_s=hang_s,
            max_queue_per_worker=max_queue_per_worker,
            reload_timeout_s=reload_timeout_s,
            audit=audit,
        )
        pool._fork_all(PolicyState(engine, policy, audit))
        return pool

    def _fork_all(self, state: PolicyState) -> None:
        self._zygote_pid, self._zygote_pidfd, self._control = wire.fork_zygote(state)
        self._zygote_alive = self._zygote_verified = True
        try:
            for slot in range(self.workers_wanted):
                reply, fds = self._control_call_blocking(wire.Spawn(0))
                if not isinstance(reply, wire.Spawned) or len(fds) != 2:
                    for fd in fds:
                        os.close(fd)
                    raise RuntimeError(f"zygote could not fork worker {slot}: {reply}")
                self._spawned.append((slot, reply.pid, fds[1], socket.socket(fileno=fds[0])))
        except BaseException:
            self.terminate()
            raise

    def _control_call_blocking(self, msg: Any) -> tuple[Any, list[int]]:
        assert self._control is not None
        self._control.send(encode_frame(self._encoder.encode(_with_id(msg, self._next_id()))))
        ready, _, _ = select.select([self._control], [], [], 30.0)
        if not ready:
            raise RuntimeError("evaluator zygote did not answer within 30 s")
        data, fds, _flags, _addr = socket.recv_fds(self._control, 1 << 16, 4)
        if not data:
            raise RuntimeError("evaluator zygote exited during start-up")
        (payload,) = self._control_frames.feed(data)
        return self._from_zygote.decode(payload), fds

    async def attach(self) -> None:
        """Wires the pre-forked workers into the running loop and waits until
        each answers a ping with the policy hash it runs."""
        loop = asyncio.get_running_loop()
        if self._loop is not None:
            raise RuntimeError("attach() was already called")
        self._loop = loop
        self._control_lock = asyncio.Lock()
        self._ready_event = asyncio.Event()
        assert self._control is not None
        self._control.setblocking(False)
        loop.add_reader(self._control.fileno(), self._on_control_readable)
        spawned, self._spawned = self._spawned, []
        await asyncio.gather(*(self._adopt(*item) for item in spawned))
        self._spawn_task(self._watchdog())

    async def _adopt(self, slot: int, pid: int, pidfd: int, sock: socket.socket) -> None:
        assert self._loop is not None
        worker = _Worker(self, slot, pid, pidfd)
        self._workers[slot] = worker
        try:
            await self._loop.connect_accepted_socket(lambda: worker, sock)
        except OSError:
            sock.close()
            self._worker_lost(worker)
            return
        pong = await self._ask(worker, wire.Ping(0), max(5.0, self.deadline_s))
        if isinstance(pong, wire.Pong) and pong.policy_hash == self._hash:
            worker.ready = True
            assert self._ready_event is not None
            self._ready_event.set()
        elif worker.alive:
            self._kill(worker, f"answered its first ping with {pong}")

    # ------------------------------------------------------------ evaluate

    async def evaluate(self, call: Call) -> Decision:
        started = time.perf_counter_ns()
        self.calls += 1
        try:
            decision = await self._evaluate(call)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the Evaluator contract: a failure is a deny
            log.exception("evaluator pool error")
            decision = self._deny(
                call,
                _Failure("evaluator_error", "pool.error", f"evaluator pool error: {exc!r}"),
            )
        verdict = decision.verdict
        self._decisions[verdict] = self._decisions.get(verdict, 0) + 1
        elapsed_us = (time.perf_counter_ns() - started) / 1000
        self._latency_sum_us += elapsed_us
        self._latency_counts[bisect.bisect_left(LATENCY_BUCKETS_US, elapsed_us)] += 1
        return decision

    async def _evaluate(self, call: Call) -> Decision:
        policy_hash = self._hash
        limiter = self.rate_limiter
        if limiter is not None:
            refused = self._rates.refusal(limiter, call, time.monotonic_ns())
            if refused is not None:
                return self._deny(
                    call,
                    _Failure("rate_limit", refused.rule_id, refused.reason),
                    retry_after_ms=refused.retry_after_ms,
                )
        cache = self.cache
        key: bytes | None = None
        if cache is not None and cache.enabled:
            key = cache.key(policy_hash, call)
            hit = cache.get(key, policy_hash, call.call_id, time.monotonic_ns())
            if hit is not None:
                return hit
        reply = await self._dispatch(call, policy_hash)
        if isinstance(reply, _Failure):
            return self._deny(call, reply)
        if isinstance(reply, wire.EvalFailed):
            return self._deny(call, _Failure("evaluator_error", "pool.error", reply.reason))
        if isinstance(reply, wire.AuditFailed):
            return self._deny(call, _Failure(AUDIT_FAILED_CATEGORY, "pool.audit", reply.reason))
        decision: Decision = reply.decision
        if decision.call_id != call.call_id or decision.policy_hash != policy_hash:
            return self._deny(
                call,
                _Failure(
                    "evaluator_error",
                    "pool.error",
                    "evaluator answered for another call or policy; denied",
                ),
            )
        if key is not None and cache is not None and decision.cacheable:
            cache.put(key, decision, time.monotonic_ns())
        return decision

    async def _dispatch(self, call: Call, policy_hash: str) -> Any:
        loop = self._loop
        if loop is None or self._closing:
            return _Failure(
                "evaluator_unavailable", "pool.unavailable", "evaluator pool is not running"
            )
        deadline = loop.time() + self.answer_s
        worker = self._pick()
        if worker is None:
            assert self._ready_event is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready_event.wait(), self.deadline_s)
            worker = self._pick()
            if worker is None:
                return _Failure(
                    "evaluator_unavailable",
                    "pool.unavailable",
                    f"no evaluator worker became ready within {self.deadline_s:g} s",
                )
        if len(worker.pending) >= self.max_queue_per_worker:
            return _Failure(
                "overload",
                "pool.overloaded",
                f"every evaluator worker has {self.max_queue_per_worker} calls queued",
            )
        msg_id = self._next_id()
        try:
            payload = self._encoder.encode(
                wire.EvalRequest(msg_id, policy_hash, time.time_ns(), call)
            )
        except OverflowError:
            # An integer beyond 64 bits: send the canonical JSON instead.
            slim = msgspec.structs.replace(call, params=None)
            payload = self._encoder.encode(
                wire.EvalRequest(msg_id, policy_hash, time.time_ns(), slim, True)
            )
        future: asyncio.Future[Any] = loop.create_future()
        entry = worker.send(msg_id, encode_frame(payload), future)
        worker.fail_at(entry, deadline)
        return await future

    def _pick(self) -> _Worker | None:
        workers = self._workers
        n = len(workers)
        best: _Worker | None = None
        best_load = 1 << 62
        start = self._rr
        self._rr = (start + 1) % n
        for i in range(n):
            w = workers[(start + i) % n]
            if w is not None and w.ready:
                load = len(w.pending)
                if load < best_load:
                    best, best_load = w, load
                    if load == 0:
                        break
        return best

    def _deny(self, call: Call, failure: _Failure, retry_after_ms: int | None = None) -> Decision:
        self._pool_denials[failure.category] = self._pool_denials.get(failure.category, 0) + 1
        return Decision(
            call_id=call.call_id,
            verdict="deny",
            rule_id=failure.rule_id,
            reason=failure.reason,
            pointer=None,
            policy_hash=self._hash,
            category=failure.category,
            cacheable=False,
            retry_after_ms=retry_after_ms,
        )

    # ------------------------------------------------------------ policy & rates

    @property
    def policy(self) -> Any:
        """The running policy object (for tools/list filtering, identity config)."""
        return self._policy

    @property
    def policy_hash(self) -> str:
        return self._hash

    async def reload(self, path: str | Path | None = None) -> ReloadResult:
        """Loads ``path`` (default: the path given at start) and swaps it in
        everywhere, atomically: every call dispatched after this returns ok is
        judged under the new policy, every call before under the old.  On any
        failure the old policy stays and ``error`` says why."""
        assert self._control_lock is not None, "attach() first"
        target = self.policy_path if path is None else str(path)
        old = self._hash
        async with self._control_lock:
            try:
                policy = await asyncio.to_thread(self._engine.load, target)
            except Exception as exc:  # noqa: BLE001 - reported; the old policy keeps running
                return self._reload_failed(old, describe_error(exc))
            new = policy.hash
            live = [w for w in self._workers if w is not None and w.alive]
            # A dead zygote is left out; a new one is started from the new
            # policy once the switch is made.
            with_zygote = self._zygote_alive
            try:
                prepared = await asyncio.gather(
                    *([self._ask_zygote(wire.Prepare(0, target))] if with_zygote else []),
                    *(self._ask(w, wire.Prepare(0, target), self.reload_timeout_s) for w in live),
                )
            except (OSError, RuntimeError) as exc:
                await self._abort_everywhere(live)
                return self._reload_failed(old, f"evaluator zygote: {exc}")
            names = [*(["zygote"] if with_zygote else []), *(f"worker {w.pid}" for w in live)]
            for who, reply in zip(names, prepared, strict=True):
                problem = None
                if isinstance(reply, _Failure):
                    problem = reply.reason
                elif not isinstance(reply, wire.Prepared):
                    problem = f"unexpected answer {type(reply).__name__}"
                elif not reply.ok:
                    problem = reply.error
                elif reply.policy_hash != new:
                    problem = "loaded a different policy (the file changed during the reload)"
                if problem is not None:
                    await self._abort_everywhere(live)
                    return self._reload_failed(old, f"{who}: {problem}")
            # The switch: from here on every EvalRequest names the new hash, which
            # every live process already holds (staged).
            self._policy, self._hash = policy, new
            self.policy_path = target
            self._rates = PolicyRates(self._policy)
            if with_zygote:
                with contextlib.suppress(OSError, RuntimeError):
                    await self._ask_zygote(wire.Commit(0, new))
            if not self._zygote_alive and not self._closing:
                self._spawn_task(self._restart_zygote())
            commits = await asyncio.gather(
                *(self._ask(w, wire.Commit(0, new), self.reload_timeout_s) for w in live)
            )
            for w, reply in zip(live, commits, strict=True):
                if not (isinstance(reply, wire.Pong) and reply.policy_hash == new) and w.alive:
                    self._kill(w, "did not commit the reloaded policy")
            self.reloads_ok += 1
            return ReloadResult(True, new, old, changed=new != old)

    def _reload_failed(self, old: str, error: str) -> ReloadResult:
        self.reloads_failed += 1
        log.warning("policy reload failed, keeping %s: %s", old[:12], error)
        return ReloadResult(False, old, old, error=error)

    async def _abort_everywhere(self, live: list[_Worker]) -> None:
        if self._zygote_alive:
            with contextlib.suppress(OSError, RuntimeError):
                await self._ask_zygote(wire.Abort(0))
        await asyncio.gather(*(self._ask(w, wire.Abort(0), 5.0) for w in live if w.alive))

    async def _ask(self, worker: _Worker, msg: Any, wait_s: float) -> Any:
        """A control message to one worker; a _Failure if it dies or stays silent."""
        assert self._loop is not None
        if not worker.alive or worker.transport is None:
            return _Failure("evaluator_crash", "pool.worker_died", f"worker {worker.pid} is gone")
        future: asyncio.Future[Any] = self._loop.create_future()
        msg_id = self._next_id()
        frame = encode_frame(self._encoder.encode(_with_id(msg, msg_id)))
        entry = worker.send(msg_id, frame, future)
        entry.timer = self._loop.call_later(
            wait_s,
            _fail,
            future,
            _Failure("evaluator_timeout", "pool.timeout", f"worker {worker.pid} did not answer"),
        )
        return await future

    # ------------------------------------------------------------ zygote channel

    def _on_control_readable(self) -> None:
        assert self._control is not None
        try:
            data, fds, _flags, _addr = socket.recv_fds(self._control, 1 << 16, 4)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        if not data:
            self._zygote_lost()
            return
        try:
            (payload,) = self._control_frames.feed(data)
            reply = self._from_zygote.decode(payload)
        except (FrameError, msgspec.DecodeError, ValueError) as exc:
            for fd in fds:
                os.close(fd)
            log.error("evaluator zygote protocol error: %s", exc)
            self._zygote_lost()
            return
        if self._control_waiters:
            waiter = self._control_waiters.popleft()
            if not waiter.done():
                waiter.set_result((reply, fds))
                return
        for fd in fds:
            os.close(fd)

    async def _control_call(self, msg: Any) -> tuple[Any, list[int]]:
        assert self._loop is not None
        assert self._control is not None
        if not self._zygote_alive:
            raise RuntimeError("the evaluator zygote is gone; workers cannot be replaced")
        waiter: asyncio.Future[tuple[Any, list[int]]] = self._loop.create_future()
        self._control_waiters.append(waiter)
        self._control.send(encode_frame(self._encoder.encode(_with_id(msg, self._next_id()))))
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), self.reload_timeout_s)
        except TimeoutError:
            self._zygote_lost()
            raise RuntimeError("the evaluator zygote stopped answering") from None

    async def _ask_zygote(self, msg: Any) -> Any:
        reply, fds = await self._control_call(msg)
        for fd in fds:
            os.close(fd)
        return reply

    def _zygote_lost(self) -> None:
        if not self._zygote_alive:
            return
        self._zygote_alive = self._zygote_verified = False
        if self._loop is not None and self._control is not None:
            _remove_reader(self._loop, self._control.fileno())
        while self._control_waiters:
            waiter = self._control_waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RuntimeError("the evaluator zygote exited"))
        self._control_frames = FrameDecoder()
        if self._control is not None:
            self._control.close()
            self._control = None
        self._reap_zygote()
        if self._closing or self._loop is None:
            return
        lived = time.monotonic() - self._zygote_born
        self._zygote_backoff = (
            0.1 if lived > _STABLE_S else min(_MAX_BACKOFF_S, max(0.1, self._zygote_backoff * 2))
        )
        log.error("evaluator zygote exited; starting a new one (fork+exec)")
        self._spawn_task(self._restart_zygote())

    def _reap_zygote(self) -> None:
        """Retires the current (dead) zygote and reaps every retired one."""
        if self._zygote_pid > 0:
            self._retired.append((self._zygote_pid, self._zygote_pidfd, self._zygote_proc))
            self._zygote_pid, self._zygote_pidfd, self._zygote_proc = -1, -1, None
        self._reap_retired()

    def _reap_retired(self) -> None:
        """Collects retired zygotes' exit statuses, now or a little later."""
        still: list[tuple[int, int, subprocess.Popen[bytes] | None]] = []
        for pid, pidfd, proc in self._retired:
            try:
                done = proc.poll() is not None if proc else os.waitpid(pid, os.WNOHANG)[0] != 0
            except ChildProcessError:
                done = True
            if done:
                with contextlib.suppress(OSError):
                    os.close(pidfd)
            else:
                still.append((pid, pidfd, proc))
        self._retired = still
        if still and self._loop is not None and not self._closed:
            self._loop.call_later(0.1, self._reap_retired)

    async def _restart_zygote(self) -> None:
        """A zygote forked now would copy this process's running loop, so the
        replacement is fork+exec'd (``python -m agentwall.io.worker``), which is
        safe from any state: it loads the policy itself and must report the
        hash the pool runs before it is used."""
        if self._zygote_backoff:
            await asyncio.sleep(self._zygote_backoff)
        assert self._control_lock is not None
        async with self._control_lock:
            if self._closing or self._zygote_alive:
                return
            parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                command = wire.zygote_command(
                    child_end.fileno(), self.policy_path, self._engine, self.audit
                )
                env = dict(os.environ)
                env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
                # A few ms of vfork+exec, on a rare recovery path only.
                proc = subprocess.Popen(  # noqa: ASYNC220
                    command, pass_fds=(child_end.fileno(),), stdin=subprocess.DEVNULL, env=env
                )
            except (OSError, ValueError) as exc:
                parent_end.close()
                log.error("cannot start a new evaluator zygote: %s", exc)
                return
            finally:
                child_end.close()
            self._zygote_proc, self._zygote_pid = proc, proc.pid
            self._zygote_pidfd = os.pidfd_open(proc.pid)
            self._zygote_born = time.monotonic()
            self._control = parent_end
            parent_end.setblocking(False)
            assert self._loop is not None
            self._loop.add_reader(parent_end.fileno(), self._on_control_readable)
            self._zygote_alive = True
            try:
                pong = await self._ask_zygote(wire.Ping(0))
            except (OSError, RuntimeError) as exc:
                log.error("new evaluator zygote failed: %s", exc)
                return  # _zygote_lost already scheduled the next attempt
            if not isinstance(pong, wire.Pong) or pong.policy_hash != self._hash:
                got = getattr(pong, "policy_hash", "?")
                log.error(
                    "new evaluator zygote runs policy %s, not %s (the file changed since it "
                    "was loaded); stopping it until the next successful reload",
                    got[:12],
                    self._hash[:12],
                )
                self._closing_zygote()
                return
            self._zygote_verified = True
            self._zygote_restarts += 1
            log.warning("evaluator zygote replaced (pid %d)", proc.pid)
        for slot, w in enumerate(self._workers):
            if w is None:
                self._spawn_task(self._respawn(slot))

    def _closing_zygote(self) -> None:
        """Stops the current zygote without scheduling a replacement."""
        self._zygote_alive = self._zygote_verified = False
        if self._loop is not None and self._control is not None:
            _remove_reader(self._loop, self._control.fileno())
        if self._control is not None:
            self._control.close()
            self._control = None
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(self._zygote_pidfd, signal.SIGKILL)
        self._reap_zygote()

    # ------------------------------------------------------------ deaths & respawn

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def _kill(self, worker: _Worker, why: str) -> None:
        log.error("killing evaluator worker %d: %s", worker.pid, why)
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(worker.pidfd, signal.SIGKILL)
        if worker.transport is not None:
            worker.transport.abort()
        else:
            self._worker_lost(worker)

    def _worker_lost(self, worker: _Worker) -> None:
        if not worker.alive:
            return
        worker.alive = False
        worker.ready = False
        failure = _Failure(
            "evaluator_crash",
            "pool.worker_died",
            f"evaluator worker {worker.pid} died with the call in flight; denied",
        )
        worker.stop_deadlines()
        while worker.pending:
            entry = worker.pending.popleft()
            if entry.timer is not None:
                entry.timer.cancel()
            if entry.future is not None:
                _fail(entry.future, failure)
        if worker.transport is not None:
            worker.transport.abort()
        with contextlib.suppress(OSError):
            os.close(worker.pidfd)
        if self._workers[worker.slot] is worker:
            self._workers[worker.slot] = None
        if self._ready_event is not None and not any(w and w.ready for w in self._workers):
            self._ready_event.clear()
        if self._closing:
            return
        log.warning("evaluator worker %d (slot %d) died; replacing it", worker.pid, worker.slot)
        lived = time.monotonic() - worker.born
        slot = worker.slot
        self._backoff[slot] = (
            0.0 if lived > _STABLE_S else min(_MAX_BACKOFF_S, max(0.05, self._backoff[slot] * 2))
        )
        if self._loop is not None:
            self._spawn_task(self._respawn(slot))

    async def _respawn(self, slot: int) -> None:
        delay = self._backoff[slot]
        if delay:
            await asyncio.sleep(delay)
        assert self._control_lock is not None
        async with self._control_lock:
            if self._closing or self._workers[slot] is not None:
                return
            try:
                reply, fds = await self._control_call(wire.Spawn(0))
            except (OSError, RuntimeError) as exc:
                log.error("cannot replace evaluator worker in slot %d: %s", slot, exc)
                return
            if not isinstance(reply, wire.Spawned) or len(fds) != 2:
                for fd in fds:
                    os.close(fd)
                log.error("zygote could not fork a worker: %s", reply)
                self._backoff[slot] = min(_MAX_BACKOFF_S, max(0.05, self._backoff[slot] * 2))
                self._spawn_task(self._respawn(slot))
                return
            self.worker_restarts += 1
            await self._adopt(slot, reply.pid, fds[1], socket.socket(fileno=fds[0]))

    async def _watchdog(self) -> None:
        """Kills workers stuck on a request far past its deadline."""
        hang_ns = int(self.hang_s * 1e9)
        while not self._closing:
            await asyncio.sleep(min(0.5, self.hang_s / 4))
            now = time.monotonic_ns()
            for w in self._workers:
                if w is None or not w.alive or not w.pending:
                    continue
                if now - w.pending[0].sent_ns > hang_ns:
                    self._kill(w, f"no answer for {self.hang_s:g} s")

    def _spawn_task(self, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ health & metrics

    @property
    def ready(self) -> bool:
        """True while at least one worker runs the current policy."""
        if self._loop is None or self._closing:
            return False
        current = self._hash
        return any(w is not None and w.ready and w.policy_hash == current for w in self._workers)

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers if w is not None and w.alive]

    @property
    def zygote_pid(self) -> int:
        return self._zygote_pid

    def health(self) -> PoolHealth:
        statuses = tuple(
            WorkerStatus(w.slot, w.pid, w.ready, w.policy_hash, len(w.pending), w.evaluated)
            for w in self._workers
            if w is not None
        )
        return PoolHealth(
            ready=self.ready,
            policy_hash=self._hash,
            workers=statuses,
            workers_wanted=self.workers_wanted,
            zygote_alive=self._zygote_alive and self._zygote_verified,
            closing=self._closing,
        )

    async def ping(self, wait_s: float = 2.0) -> PoolHealth:
        """Pings every worker (refreshing the policy hash each reports)."""
        live = [w for w in self._workers if w is not None and w.alive]
        await asyncio.gather(*(self._ask(w, wire.Ping(0), wait_s) for w in live))
        return self.health()

    def metrics(self) -> PoolMetrics:
        cumulative: list[int] = []
        running = 0
        for count in self._latency_counts:
            running += count
            cumulative.append(running)
        cache = self.cache
        return PoolMetrics(
            calls=self.calls,
            cache_hits=cache.hits if cache else 0,
            cache_misses=cache.misses if cache else 0,
            decisions=dict(self._decisions),
            pool_denials=dict(self._pool_denials),
            latency_buckets_us=LATENCY_BUCKETS_US,
            latency_counts=tuple(cumulative),
            latency_sum_us=self._latency_sum_us,
            workers_ready=sum(1 for w in self._workers if w is not None and w.ready),
            workers_wanted=self.workers_wanted,
            worker_restarts=self.worker_restarts,
            reloads_ok=self.reloads_ok,
            reloads_failed=self.reloads_failed,
        )

    def prometheus(self, prefix: str = "agentwall") -> str:
        """The pool's metrics in Prometheus text format (for GET /metrics)."""
        m = self.metrics()
        lines = [
            f"# TYPE {prefix}_evaluator_calls_total counter",
            f"{prefix}_evaluator_calls_total {m.calls}",
            f"# TYPE {prefix}_decision_cache_hits_total counter",
            f"{prefix}_decision_cache_hits_total {m.cache_hits}",
            f"# TYPE {prefix}_decision_cache_misses_total counter",
            f"{prefix}_decision_cache_misses_total {m.cache_misses}",
            f"# TYPE {prefix}_decisions_total counter",
        ]
        lines += [
            f'{prefix}_decisions_total{{verdict="{v}"}} {n}' for v, n in sorted(m.decisions.items())
        ]
        lines.append(f"# TYPE {prefix}_evaluator_denials_total counter")
        lines += [
            f'{prefix}_evaluator_denials_total{{category="{c}"}} {n}'
            for c, n in sorted(m.pool_denials.items())
        ]
        lines.append(f"# TYPE {prefix}_evaluate_latency_seconds histogram")
        for le, count in zip(m.latency_buckets_us, m.latency_counts, strict=False):
            lines.append(f'{prefix}_evaluate_latency_seconds_bucket{{le="{le / 1e6:g}"}} {count}')
        lines.append(
            f'{prefix}_evaluate_latency_seconds_bucket{{le="+Inf"}} {m.latency_counts[-1]}'
        )
        lines.append(f"{prefix}_evaluate_latency_seconds_sum {m.latency_sum_us / 1e6:.6f}")
        lines.append(f"{prefix}_evaluate_latency_seconds_count {m.latency_counts[-1]}")
        lines += [
            f"# TYPE {prefix}_evaluator_workers_ready gauge",
            f"{prefix}_evaluator_workers_ready {m.workers_ready}",
            f"# TYPE {prefix}_evaluator_worker_restarts_total counter",
            f"{prefix}_evaluator_worker_restarts_total {m.worker_restarts}",
            f"# TYPE {prefix}_policy_reloads_total counter",
            f'{prefix}_policy_reloads_total{{result="ok"}} {m.reloads_ok}',
            f'{prefix}_policy_reloads_total{{result="failed"}} {m.reloads_failed}',
        ]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------ shutdown

    async def close(self, drain_s: float = 5.0) -> None:
        """Stops taking calls, waits up to ``drain_s`` for those in flight, then
        stops the workers and the zygote."""
        if self._closed:
            return
        self._closing = True
        in_flight = [
            e.future
            for w in self._workers
            if w is not None
            for e in w.pending
            if e.future is not None and not e.future.done()
        ]
        if in_flight:
            await asyncio.wait(in_flight, timeout=drain_s)
        for task in list(self._tasks):
            task.cancel()
        workers = [w for w in self._workers if w is not None]
        for w in workers:
            self._worker_lost(w)
        if self._loop is not None and self._control is not None and self._zygote_alive:
            _remove_reader(self._loop, self._control.fileno())
        self._zygote_alive = False
        self.terminate()

    def terminate(self) -> None:
        """Synchronous teardown: closes every channel (workers and the zygote
        exit on EOF), then waits briefly for the zygote, killing it if needed."""
        self._closing = True
        self._closed = True
        for _slot, _pid, pidfd, sock in self._spawned:
            sock.close()
            with contextlib.suppress(OSError):
                os.close(pidfd)
        self._spawned = []
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._zygote_pid > 0:
            self._retired.append((self._zygote_pid, self._zygote_pidfd, self._zygote_proc))
            self._zygote_pid, self._zygote_pidfd, self._zygote_proc = -1, -1, None
        for pid, pidfd, proc in self._retired:
            _wait_or_kill(pid, pidfd, 2.0)
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.1)
            with contextlib.suppress(OSError):
                os.close(pidfd)
        self._retired = []


def _wait_or_kill(pid: int, pidfd: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        if time.monotonic() > deadline:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            return
        select.select([pidfd], [], [], 0.05)


def _check_fork_is_safe(unsafe_allow_threads: bool) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "EvaluatorPool.start() must run before the event loop starts "
            "(forking a process with a running loop is unsafe); call attach() inside it"
        )
    if threading.active_count() > 1 and not unsafe_allow_threads:
        raise RuntimeError(
            "EvaluatorPool.start() must run before any other thread exists: fork copies "
            f"only the calling thread ({threading.active_count()} threads are running)"
        )


__all__ = [
    "EvaluatorPool",
    "PolicyEngine",
    "PoolHealth",
    "PoolMetrics",
    "ReloadResult",
    "WorkerStatus",
]
