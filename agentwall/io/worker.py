"""Evaluator processes: the zygote and the workers it forks.

Process tree (see ``agentwall.io.pool`` for the parent side)::

    supervisor (asyncio/uvloop, never forks after start-up)
     └─ zygote      forked before any event loop or thread exists, holding the
        │           loaded, compiled policy; single-threaded and loop-free, it
        │           only forks workers on request and stages/commits reloads
        ├─ worker 1 forked by the zygote: evaluates calls, one at a time
        └─ worker N

Compiled fastjsonschema validators and RE2 objects cannot be pickled, so a
worker must inherit them through ``fork``.  Forking the supervisor itself once
its event loop runs would copy a process with an epoll instance, signal wakeup
fd, and possibly threads holding locks; the zygote avoids that: it is forked
once, early, and every worker (including replacements for dead ones) is forked
from it, a process that never had a loop or a thread.

Wire: every channel carries ``agentwall.ipc.wire`` frames of msgspec msgpack.
Worker channels are stream socketpairs; the zygote's control channel is a
SOCK_SEQPACKET socketpair, so a ``Spawned`` reply and the descriptors it carries
(SCM_RIGHTS: the parent's end of the new worker's socketpair and a pidfd for it)
arrive as one message.

Reloads are two-phase so that a policy swap is atomic from the parent's point
of view: ``Prepare(path)`` makes every process load and compile the new policy
next to the running one and report its hash; only when all succeed does the
parent switch (each ``EvalRequest`` names the policy hash it must be judged
under) and then ``Commit``; otherwise ``Abort`` and the old policy stays.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import msgspec

from agentwall.audit.record import judged_event, judged_outcome
from agentwall.errors import AgentwallError, AuditError
from agentwall.ipc.wire import FrameDecoder, encode_frame
from agentwall.types import PASSING_VERDICTS, AuditEvent, Call, Decision

# ---------------------------------------------------------------- messages


class EvalRequest(msgspec.Struct, tag="eval", array_like=True, frozen=True):
    id: int
    policy_hash: str
    now_ns: int
    call: Call
    # True when ``call.params`` could not travel as msgpack (an integer beyond
    # 64 bits): the worker rebuilds it from ``call.params_json``.
    params_from_json: bool = False


class EvalReply(msgspec.Struct, tag="ok", array_like=True, frozen=True):
    id: int
    decision: Decision


class EvalFailed(msgspec.Struct, tag="failed", array_like=True, frozen=True):
    id: int
    reason: str


class AuditFailed(msgspec.Struct, tag="audit_failed", array_like=True, frozen=True):
    """The call was decided, but its audit entry could not be made durable."""

    id: int
    reason: str


class Ping(msgspec.Struct, tag="ping", array_like=True, frozen=True):
    id: int


class Pong(msgspec.Struct, tag="pong", array_like=True, frozen=True):
    id: int
    pid: int
    policy_hash: str
    staged_hash: str | None
    evaluated: int


class Prepare(msgspec.Struct, tag="prepare", array_like=True, frozen=True):
    id: int
    path: str | None


class Prepared(msgspec.Struct, tag="prepared", array_like=True, frozen=True):
    id: int
    ok: bool
    policy_hash: str
    error: str


class Commit(msgspec.Struct, tag="commit", array_like=True, frozen=True):
    id: int
    policy_hash: str


class Abort(msgspec.Struct, tag="abort", array_like=True, frozen=True):
    id: int


class Spawn(msgspec.Struct, tag="spawn", array_like=True, frozen=True):
    id: int


class Spawned(msgspec.Struct, tag="spawned", array_like=True, frozen=True):
    id: int
    pid: int


class SpawnFailed(msgspec.Struct, tag="spawn_failed", array_like=True, frozen=True):
    id: int
    error: str


ToWorker = EvalRequest | Ping | Prepare | Commit | Abort
FromWorker = EvalReply | EvalFailed | AuditFailed | Pong | Prepared
ToZygote = Spawn | Ping | Prepare | Commit | Abort
FromZygote = Spawned | SpawnFailed | Pong | Prepared


class WorkerAudit(msgspec.Struct, frozen=True):
    """How a worker writes the entries of the calls it decides (``agentwall
    start``): the audit writer's socket, and the shell's settings an entry
    reflects.  With it, a worker replies only once its entries are durable,
    so the front-end neither builds nor waits for them."""

    socket_path: str
    dry_run: bool = False
    log_params: bool = False
    deadline_s: float = 2.0


# ------------------------------------------------------------------ engine


@dataclass(frozen=True)
class PolicyEngine:
    """What a worker needs from the policy package: load a policy (an object
    with a ``hash`` attribute) and evaluate a call against it.  Decisions are
    exactly ``evaluate(policy, call, now_ns)``."""

    load: Callable[[str | None], Any]
    evaluate: Callable[[Any, Call, int], Decision]


def default_engine() -> PolicyEngine:
    from agentwall.policy import evaluate, load_policy

    return PolicyEngine(load_policy, evaluate)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, AgentwallError):
        return exc.diagnostics()
    return f"{type(exc).__name__}: {exc}"


class PolicyState:
    """The policies a process holds: the running one and, during a reload, the
    staged one.  Shared by the zygote and the workers (inherited by fork)."""

    def __init__(self, engine: PolicyEngine, policy: Any, audit: WorkerAudit | None = None) -> None:
        self.engine = engine
        self.audit = audit
        self.policies: dict[str, Any] = {policy.hash: policy}
        self.current: str = policy.hash
        self.staged: str | None = None
        self.evaluated = 0

    def prepare(self, msg: Prepare) -> Prepared:
        self.abort()
        try:
            policy = self.engine.load(msg.path)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, old policy kept
            return Prepared(msg.id, False, "", describe_error(exc))
        self.staged = policy.hash
        self.policies[policy.hash] = policy
        return Prepared(msg.id, True, policy.hash, "")

    def commit(self, msg: Commit) -> None:
        if msg.policy_hash in self.policies:
            self.current = msg.policy_hash
            self.policies = {msg.policy_hash: self.policies[msg.policy_hash]}
        self.staged = None

    def abort(self) -> None:
        if self.staged is not None and self.staged != self.current:
            self.policies.pop(self.staged, None)
        self.staged = None

    def pong(self, msg: Ping) -> Pong:
        return Pong(msg.id, os.getpid(), self.current, self.staged, self.evaluated)

    def evaluate(self, msg: EvalRequest) -> tuple[EvalReply | EvalFailed, Call]:
        """The reply, and the call as evaluated (its params rebuilt when they
        travelled as JSON)."""
        call = msg.call
        policy = self.policies.get(msg.policy_hash)
        if policy is None:
            return EvalFailed(msg.id, f"worker does not hold policy {msg.policy_hash[:12]}"), call
        try:
            if msg.params_from_json:
                call = msgspec.structs.replace(call, params=json.loads(call.params_json))
            decision = self.engine.evaluate(policy, call, msg.now_ns)
        except Exception as exc:  # noqa: BLE001 - the parent turns this into a deny
            return EvalFailed(msg.id, f"evaluator raised {describe_error(exc)}"), call
        self.evaluated += 1
        return EvalReply(msg.id, decision), call


# ------------------------------------------------------------------ worker

_encoder = msgspec.msgpack.Encoder()


def _child_signals() -> None:
    # The supervisor owns ^C, SIGTERM draining and SIGHUP reloads; a worker or
    # the zygote ends when its parent's end of the channel closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)


class _Batch:
    """The replies to one read from the parent, held until every entry they
    depend on is durable (replies leave in request order)."""

    __slots__ = ("deadline", "events", "replies", "request", "slots")

    def __init__(self) -> None:
        self.replies: list[FromWorker] = []
        self.events: list[AuditEvent] = []
        self.slots: list[int] = []  # where each event's reply sits in ``replies``
        self.request: int | None = None  # the writer request they await
        self.deadline = 0.0

    def settle(self, problem: str | None) -> None:
        """Every entry is durable (None), or none may be taken as such."""
        for slot in self.slots:
            reply = self.replies[slot]
            assert isinstance(reply, EvalReply)
            self.replies[slot] = (
                EvalReply(reply.id, msgspec.structs.replace(reply.decision, durable=True))
                if problem is None
                else AuditFailed(reply.id, problem)
            )
        self.events = []
        self.slots = []
        self.request = None


class _EntryWriter:
    """A worker's side of the audit chain.  Each batch's entries go to the
    writer as one request as soon as they are decided, and the worker goes on
    reading and deciding while they sync; a batch's replies leave only once
    its entries are durable, after every earlier batch's."""

    def __init__(self, config: WorkerAudit) -> None:
        # Imported here: a worker without a writer never needs them.
        from agentwall.io.audit_writer import AuditChannel
        from agentwall.policy.secrets import params_for_log

        self.config = config
        self.channel = AuditChannel(config.socket_path, deadline_s=config.deadline_s)
        self.mask = params_for_log if config.log_params else None
        self.waiting: deque[_Batch] = deque()  # submitted, not yet answered

    def add(self, batch: _Batch, call: Call, decision: Decision) -> str | None:
        """Queues the entry for the batch's last reply; the reason when it
        cannot be built."""
        verdict = decision.verdict
        outcome = judged_outcome(verdict, verdict in PASSING_VERDICTS, self.config.dry_run)
        try:
            event = judged_event(
                call, decision, outcome, (time.time_ns() - call.received_ns) // 1000, self.mask
            )
        except Exception as exc:  # noqa: BLE001 - refused by the parent, never forwarded
            return f"audit entry could not be built: {describe_error(exc)}"
        batch.events.append(event)
        batch.slots.append(len(batch.replies))
        return None

    def submit(self, batch: _Batch) -> None:
        if not batch.events:
            return
        try:
            batch.request = self.channel.submit(batch.events)
        except AuditError as exc:
            reason = f"audit entry not durable ({exc})"
            self.fail_all(reason)
            batch.settle(reason)
            return
        batch.deadline = time.monotonic() + self.config.deadline_s
        self.waiting.append(batch)

    def timeout(self) -> float:
        """Seconds until the oldest request's deadline."""
        return max(0.0, self.waiting[0].deadline - time.monotonic())

    def collect(self) -> None:
        """Settles the batches the writer answered, or fails every one when
        it broke the protocol or went away."""
        try:
            answers = self.channel.collect()
        except AuditError as exc:
            self.fail_all(f"audit entry not durable ({exc})")
            return
        for request, problem in answers:
            if not self.waiting or self.waiting[0].request != request:
                self.fail_all("audit entry not durable (the writer answered out of order)")
                return
            self.waiting.popleft().settle(problem)

    def expire(self) -> None:
        """Fails every waiting batch once the oldest has waited too long."""
        if self.waiting and self.waiting[0].deadline <= time.monotonic():
            self.fail_all(
                "audit entry not durable (the audit writer did not answer within "
                f"{self.config.deadline_s:g} s)"
            )

    def fail_all(self, reason: str) -> None:
        # Their requests are abandoned with the connection: an answer to one
        # of them must never be read as a later request's.
        self.channel.close()
        while self.waiting:
            self.waiting.popleft().settle(reason)


def _answer(state: PolicyState, msg: ToWorker) -> tuple[FromWorker, Call | None]:
    if isinstance(msg, EvalRequest):
        return state.evaluate(msg)
    if isinstance(msg, Ping):
        return state.pong(msg), None
    if isinstance(msg, Prepare):
        return state.prepare(msg), None
    if isinstance(msg, Commit):
        state.commit(msg)
        return state.pong(Ping(msg.id)), None
    state.abort()
    return state.pong(Ping(msg.id)), None


def worker_main(sock: socket.socket, state: PolicyState) -> NoReturn:
    """Serve one parent over ``sock`` until it closes; never returns."""
    code = 0
    try:
        decoder = msgspec.msgpack.Decoder(ToWorker)
        frames = FrameDecoder()
        entries = _EntryWriter(state.audit) if state.audit is not None else None
        held: deque[_Batch] = deque()  # in request order
        # recv_into a reused buffer: sock.recv(n) allocates n bytes per call,
        # which at n = 1 MiB cost ~18 us per call here (an mmap/munmap pair).
        buffer = bytearray(1 << 16)
        view = memoryview(buffer)
        while True:
            parent_ready = True
            if entries is not None and entries.waiting:
                channel = entries.channel.sock
                assert channel is not None
                ready, _, _ = select.select([sock, channel], [], [], entries.timeout())
                parent_ready = sock in ready
                if channel in ready:
                    entries.collect()
                entries.expire()
            if parent_ready:
                received = sock.recv_into(buffer)
                if not received:
                    break
                batch = _Batch()
                for payload in frames.feed(bytes(view[:received])):
                    reply, call = _answer(state, decoder.decode(payload))
                    if entries is not None and type(reply) is EvalReply:
                        assert call is not None
                        problem = entries.add(batch, call, reply.decision)
                        if problem is not None:
                            reply = AuditFailed(reply.id, problem)
                    batch.replies.append(reply)
                if entries is not None:
                    entries.submit(batch)
                held.append(batch)
            out: list[bytes] = []
            while held and held[0].request is None:
                out += [encode_frame(_encoder.encode(r)) for r in held.popleft().replies]
            if out:
                sock.sendall(b"".join(out))
    except BaseException as exc:  # noqa: BLE001 - a worker must never unwind into its parent's stack
        code = 1
        _last_words(f"evaluator worker {os.getpid()} stopping: {describe_error(exc)}")
    finally:
        os._exit(code)


def _last_words(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except Exception:  # noqa: BLE001, S110 - stderr may be gone; the exit code still says it
        pass


# ------------------------------------------------------------------ zygote


def _reap() -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _close_inherited_fds(keep: set[int]) -> None:
    """Drops every descriptor inherited from the supervisor (listening and
    client sockets, the audit writer's pipes, shared-memory regions) except
    stdio and ``keep``: the zygote and its workers must not keep the
    supervisor's connections open or hold its files."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _spawn(control: socket.socket, state: PolicyState, msg: Spawn) -> None:
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:
        try:
            control.close()
            parent_end.close()
        finally:
            worker_main(child_end, state)
    child_end.close()
    # pidfd_open before this process reaps anything: the pid cannot have been
    # reused yet, so the descriptor names exactly this worker.
    pidfd = os.pidfd_open(pid)
    try:
        payload = encode_frame(_encoder.encode(Spawned(msg.id, pid)))
        socket.send_fds(control, [payload], [parent_end.fileno(), pidfd])
    finally:
        parent_end.close()
        os.close(pidfd)


def zygote_main(control: socket.socket, state: PolicyState) -> NoReturn:
    """Fork workers on request until the parent closes the control channel."""
    code = 0
    try:
        _child_signals()
        # Objects that exist now are shared copy-on-write with every worker;
        # keep the collector from touching (and so copying) them.  Frozen, the
        # parent's socket and file objects are also never finalised here, which
        # is what makes closing their descriptors below safe.
        gc.freeze()
        _close_inherited_fds(keep={control.fileno()})
        decoder = msgspec.msgpack.Decoder(ToZygote)
        frames = FrameDecoder()
        while True:
            ready, _, _ = select.select([control], [], [], 1.0)
            _reap()
            if not ready:
                continue
            data = control.recv(1 << 16)
            if not data:
                break
            for payload in frames.feed(data):
                msg = decoder.decode(payload)
                reply: FromZygote | None = None
                if isinstance(msg, Spawn):
                    try:
                        _spawn(control, state, msg)
                    except OSError as exc:  # fork or pidfd refused: report, keep serving
                        reply = SpawnFailed(msg.id, describe_error(exc))
                elif isinstance(msg, Ping):
                    reply = state.pong(msg)
                elif isinstance(msg, Prepare):
                    reply = state.prepare(msg)
                elif isinstance(msg, Commit):
                    state.commit(msg)
                    reply = state.pong(Ping(msg.id))
                else:
                    state.abort()
                    reply = state.pong(Ping(msg.id))
                if reply is not None:
                    control.send(encode_frame(_encoder.encode(reply)))
    except BaseException as exc:  # noqa: BLE001 - never unwind into the supervisor's stack
        code = 1
        _last_words(f"evaluator zygote {os.getpid()} stopping: {describe_error(exc)}")
    finally:
        os._exit(code)


def fork_zygote(state: PolicyState) -> tuple[int, int, socket.socket]:
    """Forks the zygote; returns ``(pid, pidfd, control)`` in the parent."""
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        try:
            parent_end.close()
        finally:
            zygote_main(child_end, state)
    child_end.close()
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        parent_end.close()
        raise
    return pid, pidfd, parent_end


# ------------------------------------------------- a replacement zygote (exec)


def engine_reference(engine: PolicyEngine) -> list[str]:
    """``module:qualname`` of the engine's two functions, for an exec'd zygote."""
    refs = []
    for fn in (engine.load, engine.evaluate):
        module = getattr(fn, "__module__", None)
        qualname = getattr(fn, "__qualname__", "")
        if not module or "<" in qualname:
            raise ValueError(f"{fn!r} is not importable by name")
        refs.append(f"{module}:{qualname}")
    return refs


def _resolve(ref: str) -> Any:
    module_name, _, qualname = ref.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def zygote_command(
    control_fd: int,
    policy_path: str | None,
    engine: PolicyEngine,
    audit: WorkerAudit | None = None,
) -> list[str]:
    load, evaluate = engine_reference(engine)
    command = [
        sys.executable, "-m", "agentwall.io.worker", "--zygote",
        "--control-fd", str(control_fd),
        "--policy", "" if policy_path is None else policy_path,
        "--load", load, "--evaluate", evaluate,
    ]  # fmt: skip
    if audit is not None:
        command += ["--audit", msgspec.json.encode(audit).decode()]
    return command


def main(argv: list[str] | None = None) -> NoReturn:
    """``python -m agentwall.io.worker --zygote ...``: a zygote started with
    fork+exec by a pool whose first zygote died.  It loads (and compiles) the
    policy itself, then serves exactly like a forked one; the pool checks the
    policy hash it reports before using it."""
    import argparse

    parser = argparse.ArgumentParser(prog="agentwall.io.worker")
    parser.add_argument("--zygote", action="store_true", required=True)
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--policy", default="")
    parser.add_argument("--load", required=True)
    parser.add_argument("--evaluate", required=True)
    parser.add_argument("--audit", default=None, help="WorkerAudit as JSON")
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.control_fd)
    try:
        engine = PolicyEngine(_resolve(args.load), _resolve(args.evaluate))
        audit = None if args.audit is None else msgspec.json.decode(args.audit, type=WorkerAudit)
        state = PolicyState(engine, engine.load(args.policy or None), audit)
    except BaseException as exc:  # noqa: BLE001 - said on stderr; EOF tells the parent
        _last_words(f"replacement evaluator zygote cannot start: {describe_error(exc)}")
        os._exit(1)
    zygote_main(control, state)


if __name__ == "__main__":
    main()
