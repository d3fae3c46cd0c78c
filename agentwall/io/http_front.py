"""The MCP HTTP front-end: a uvloop/asyncio Protocol.

Per connection, ``HttpConnection`` feeds bytes to a strict HTTP/1.1 request
parser (``mcp_http.RequestParser``) and hands each complete request to one
long-lived task (no task per request).
``Proxy`` holds what every exchange shares and does the flow of one message:

    parse -> Call -> rate limit -> evaluate -> audit (durable) -> forward | error

Nothing reaches the upstream, and no answer reaches the agent, before the
decision's audit entry is durable.  The upstream receives our re-encoding of
the message that was judged, never the agent's bytes.  The pure rules (header
validation, SSE cutting, Origin checks) live in ``agentwall.core.mcp_http``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import signal
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, Protocol, cast

import msgspec
import orjson

from agentwall import compiled
from agentwall.audit.record import judged_event, judged_outcome
from agentwall.core import mcp_http as mh
from agentwall.core.jsonrpc import (
    ErrorResponse,
    Message,
    Notification,
    Request,
    Response,
    encode_message,
    error_response,
    parse,
)
from agentwall.core.jsonrpc import counts_impl as jsonrpc_counts_impl
from agentwall.core.mcp import make_call
from agentwall.core.present import apply_redactions, denial_data, denial_message, scrubbed
from agentwall.errors import (
    AUDIT_UNAVAILABLE,
    FORBIDDEN,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    OVERLOADED,
    POLICY_DENIED,
    RATE_LIMITED,
    UPSTREAM_TIMEOUT,
    UPSTREAM_UNAVAILABLE,
    AuditError,
    FrameError,
    UpstreamError,
)
from agentwall.io.busy_poll import BusyPoll
from agentwall.io.contracts import AUDIT_FAILED_CATEGORY, AuditSink, Evaluator
from agentwall.io.http_front_records import (  # re-exported: importers use http_front.<Name>
    FrontConfig as FrontConfig,
)
from agentwall.io.http_front_records import (
    Judgement as Judgement,
)
from agentwall.io.upstream import UpstreamPool, UpstreamResponse, UpstreamTimeout
from agentwall.types import (
    PASSING_VERDICTS,
    AuditEvent,
    AuditOutcome,
    Call,
    Decision,
    Identity,
)

# "compiled" when mypyc built this module and its hot peers (agentwall.compiled).
_HOT_IMPL = compiled.implementation()
log = logging.getLogger("agentwall.http")


_JSON = b"application/json"
_SSE = b"text/event-stream"


# --------------------------------------------------------------------------
# Configuration and seams


class Authenticator(Protocol):
    """The identity layer's hook (issue 6); None: no authentication.
    Implemented by ``agentwall.io.oidc.HttpIdentityGate``.

    ``authenticate`` gives the caller's Identity, or the reply to send
    instead (401 with WWW-Authenticate, 403, 503; the gate audits the
    refusal); ``serve`` answers the endpoints it owns (RFC 9728 metadata) and
    None for every other path."""

    async def authenticate(self, meta: mh.RequestMeta, peer: str) -> Identity | mh.HttpReply: ...

    def serve(
        self, method: bytes, path: bytes, host: bytes | None = None
    ) -> mh.HttpReply | None: ...

    # The 403 insufficient_scope challenge for an identity denial a better
    # token could fix (None: an ordinary denial), and the session binding
    # (an Mcp-Session-Id belongs to the subject that opened it).
    def step_up(self, decision: Decision) -> tuple[tuple[bytes, bytes], ...] | None: ...

    def session_assigned(self, session_id: str, identity: Identity) -> None: ...

    def session_ended(self, session_id: str) -> None: ...


class PolicyView(Protocol):
    """What the front-end needs from the current policy (swapped on reload)."""

    @property
    def hash(self) -> str: ...


ToolsFilter = Callable[[Any, Any, Identity | None], Any]


# --------------------------------------------------------------------------
# Metrics

_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Histogram:
    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(_BUCKETS) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        # The first bucket whose bound is >= seconds (len: the +Inf bucket).
        self.counts[bisect_left(_BUCKETS, seconds)] += 1

    def render(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        lines = []
        cumulative = 0
        for bound, n in zip(_BUCKETS, self.counts, strict=False):
            cumulative += n
            lines.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {cumulative}')
        lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        suffix = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{suffix} {self.total:.6f}")
        lines.append(f"{name}_count{suffix} {self.count}")
        return lines


class Metrics:
    def __init__(self) -> None:
        self.http_requests: dict[tuple[str, int], int] = {}
        self.messages: dict[tuple[str, str], int] = {}
        self.decisions: dict[str, int] = {}
        self.cached_decisions = 0
        self.rate_limited = 0
        self.audit_failures = 0
        self.upstream_errors: dict[str, int] = {}
        # Requests refused before they could be judged, by stage.
        self.refused: dict[str, int] = {}
        self.overloaded = 0
        self.kills: dict[str, int] = {}
        self.connections_open = 0
        self.connections_total = 0
        self.sse_events = 0
        self.decision_latency = Histogram()
        self.evaluate_latency = Histogram()
        self.audit_latency = Histogram()
        self.upstream_latency = Histogram()

    @staticmethod
    def bump(table: dict[Any, int], key: Any, n: int = 1) -> None:
        table[key] = table.get(key, 0) + n


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class LogThrottle:
    """At most one log line per ``interval`` seconds for a repeating failure:
    a dead audit writer fails every call, and a log line per call would
    become a second outage (disk, or a stderr pipe nobody drains)."""

    __slots__ = ("_interval", "_next", "_suppressed")

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next = 0.0
        self._suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self._interval
            return True
        self._suppressed += 1
        return False

    def take_suppressed(self) -> int:
        n, self._suppressed = self._suppressed, 0
        return n


# --------------------------------------------------------------------------
# Kill modes


class Killer:
    """Finds and SIGKILLs the agent process (``--kill-mode process|both``)."""

    def __init__(self, agent_pid: int | None, agent_pid_file: str | None) -> None:
        self.agent_pid = agent_pid
        self.agent_pid_file = agent_pid_file

    def resolve(
        self, peer: tuple[Any, ...] | None, local: tuple[Any, ...] | None
    ) -> tuple[int | None, str]:
        if self.agent_pid is not None:
            return self.agent_pid, "--agent-pid"
        if self.agent_pid_file is not None:
            try:
                with open(self.agent_pid_file, encoding="ascii") as fh:
                    return int(fh.read().strip()), f"--agent-pid-file {self.agent_pid_file}"
            except (OSError, ValueError) as exc:
                return None, f"cannot read --agent-pid-file {self.agent_pid_file}: {exc}"
        if peer is None or local is None:
            return None, "the client is not a TCP peer"
        if not mh.is_loopback_host(str(peer[0])):
            return (
                None,
                f"the client {peer[0]} is not on this host (only loopback peers are traced)",
            )
        pid = peer_socket_owner(peer, local)
        if pid is None:
            return None, f"no process on this host owns the peer socket {peer[0]}:{peer[1]}"
        return pid, f"owner of the peer socket {peer[0]}:{peer[1]}"

    def kill(
        self, peer: tuple[Any, ...] | None, local: tuple[Any, ...] | None
    ) -> tuple[bool, str, int | None]:
        pid, how = self.resolve(peer, local)
        if pid is None:
            return False, how, None
        if pid <= 1 or pid == os.getpid() or pid == os.getppid():
            return False, f"refusing to kill pid {pid} ({how}): not an agent process", pid
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError as exc:
            return False, f"kill({pid}) failed: {exc.strerror or exc}", pid
        return True, f"SIGKILL sent to pid {pid} ({how})", pid


def _proc_addr_v4(host: str, port: int) -> str:
    import ipaddress

    packed = ipaddress.IPv4Address(host).packed
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def _proc_addr_v6(host: str, port: int) -> str:
    import ipaddress

    packed = ipaddress.IPv6Address(host.split("%", 1)[0]).packed
    words = "".join(f"{int.from_bytes(packed[i : i + 4], 'little'):08X}" for i in range(0, 16, 4))
    return f"{words}:{port:04X}"


def peer_socket_owner(peer: tuple[Any, ...], local: tuple[Any, ...]) -> int | None:
    """The pid whose socket is the other end of our accepted connection:
    find the inode in /proc/net/tcp{,6} whose local address is the peer and
    remote address is us, then the process holding ``socket:[inode]``."""
    candidates: list[tuple[str, str, str]] = []
    host, port = str(peer[0]), int(peer[1])
    lhost, lport = str(local[0]), int(local[1])
    try:
        if ":" in host:
            candidates.append(
                ("/proc/net/tcp6", _proc_addr_v6(host, port), _proc_addr_v6(lhost, lport))
            )
            if host.startswith("::ffff:"):
                candidates.append(
                    (
                        "/proc/net/tcp",
                        _proc_addr_v4(host[7:], port),
                        _proc_addr_v4(lhost[7:], lport),
                    )
                )
        else:
            candidates.append(
                ("/proc/net/tcp", _proc_addr_v4(host, port), _proc_addr_v4(lhost, lport))
            )
    except ValueError:
        return None
    inode = None
    for table, want_local, want_remote in candidates:
        try:
            with open(table, encoding="ascii") as fh:
                next(fh, None)
                for line in fh:
                    fields = line.split()
                    if len(fields) > 9 and fields[1] == want_local and fields[2] == want_remote:
                        inode = fields[9]
                        break
        except OSError:
            continue
        if inode:
            break
    if not inode or inode == "0":
        return None
    target = f"socket:[{inode}]"
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            for fd in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    if os.readlink(f"{fd_dir}/{fd}") == target:
                        return int(entry)
        except OSError:
            continue
    return None


# --------------------------------------------------------------------------
# Judging one message


def _kind(message: Message) -> Literal["request", "notification", "response"]:
    if isinstance(message, Request):
        return "request"
    if isinstance(message, Notification):
        return "notification"
    return "response"


def _params(message: Message) -> Any:
    if isinstance(message, Request | Notification):
        params = message.params
        return None if params is msgspec.UNSET else params
    return None


def _method(message: Message) -> str | None:
    return message.method if isinstance(message, Request | Notification) else None


_GC_YOUNG_THRESHOLD = 20_000
_MAX_ISSUED_SESSIONS = 65536
_MAX_OUTSTANDING_SESSIONS = 4096
_MAX_OUTSTANDING_IDS = 1024
# Mcp-Param-* bindings remembered from the upstream's tools/list answers:
# at most this many tools and bindings in all (the oldest tools go first).
_MAX_PARAM_TOOLS = 4096
_MAX_PARAM_BINDINGS = 16384

# Responses dropped in one exchange that get their own audit entry; beyond
# it they are counted in one summary entry (a hostile upstream must not turn
# the audit log into its megaphone).
_DROPS_AUDITED = 16
# An audit reason quotes the refusal's own message; bounded so a hostile
# request cannot make one entry large.
_REFUSAL_REASON_MAX = 512


class ExchangeContext:
    """What the relay of one upstream response needs to know.

    Only answers to requests the agent sent *in this exchange* are relayed
    (``accept_response``), each once: a response to any other id, from a
    confused or hostile upstream, is dropped and audited, as ``wrap`` does.
    On a GET stream resumed with ``Last-Event-ID`` (2025-11-25 polling), the
    answers still owed to requests forwarded earlier in the same session are
    accepted too (``resume``)."""

    __slots__ = (
        "answered",
        "drops",
        "filter_ids",
        "identity",
        "initialize",
        "meta",
        "outstanding",
        "pending",
        "pending_ids",
        "resume",
        "session",
    )

    def __init__(
        self,
        session: str,
        identity: Identity | None,
        meta: mh.RequestMeta,
        filter_ids: set[Any],
        pending_ids: list[Any],
        *,
        initialize: bool = False,
        outstanding: dict[Any, bool] | None = None,
        resume: dict[Any, bool] | None = None,
    ) -> None:
        self.session = session
        self.identity = identity
        self.meta = meta
        self.filter_ids = filter_ids
        self.pending_ids = pending_ids
        self.pending = set(pending_ids)
        self.answered: set[Any] = set()
        self.initialize = initialize
        # The session's table of requests forwarded and not yet answered
        # (shared with later exchanges of the session), and for a resumed
        # GET stream the same table to accept answers from.
        self.outstanding = outstanding
        self.resume = resume
        self.drops = 0

    def accept_response(self, rpc_id: Any) -> bool | None:
        """May a response with this id reach the agent?  None: no.  Else
        whether it answers a tools/list (its result is learned, and filtered
        when configured); marks it answered."""
        if rpc_id in self.pending and rpc_id not in self.answered:
            self.answered.add(rpc_id)
            if self.outstanding is not None:
                self.outstanding.pop(rpc_id, None)
            return rpc_id in self.filter_ids
        if self.resume is not None and rpc_id in self.resume:
            return self.resume.pop(rpc_id)
        return None

    def settle(self) -> list[Any]:
        """The ids still waiting for an answer, from now on answered here
        (with an error)."""
        waiting = [rpc_id for rpc_id in self.pending_ids if rpc_id not in self.answered]
        if waiting:
            self.answered.update(waiting)
            if self.outstanding is not None:
                for rpc_id in waiting:
                    self.outstanding.pop(rpc_id, None)
        return waiting


def _with_request_id(reply: mh.HttpReply, body: bytes, max_size: int) -> mh.HttpReply:
    """A JSON-RPC error about the request's head (unknown protocol version,
    a header that lies), addressed to the request's id when the body is one
    readable request, so that the client can match it (conformance check
    sep-2575-http-server-error-jsonrpc-id)."""
    try:
        message = parse(body, max_size=max_size).message
        answer = orjson.loads(reply.body)
    except (FrameError, orjson.JSONDecodeError):
        return reply
    if not isinstance(message, Request) or not isinstance(answer, dict) or "error" not in answer:
        return reply
    if answer.get("id") is not None:
        return reply
    answer["id"] = message.id
    return msgspec.structs.replace(reply, body=orjson.dumps(answer))


def _join(messages: list[bytes]) -> bytes:
    return b"[" + b",".join(messages) + b"]"


def _reply_error(reply: mh.HttpReply) -> tuple[int | None, str, Any]:
    """(JSON-RPC code, message, id) of an error reply we produced, for its
    audit entry; a non-JSON-RPC body is described by its status."""
    try:
        answer = orjson.loads(reply.body) if reply.body else None
    except orjson.JSONDecodeError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        error = answer["error"]
        code = error.get("code")
        return (
            code if type(code) is int else None,
            str(error.get("message") or ""),
            answer.get("id"),
        )
    return None, f"HTTP {reply.status}", None


class Proxy:
    """Everything the connections share; the flow of one exchange."""

    def __init__(
        self,
        config: FrontConfig,
        *,
        evaluator: Evaluator,
        audit: AuditSink,
        upstream: UpstreamPool,
        policy: PolicyView,
        tools_filter: ToolsFilter | None = None,
        authenticator: Authenticator | None = None,
        mask_params: Callable[[Any], tuple[Any, tuple[str, ...]]] | None = None,
        readiness: Callable[[], Awaitable[dict[str, bool]]] | None = None,
        processes: Callable[[], dict[str, Any]] | None = None,
        metrics_extras: list[Callable[[], Awaitable[str]]] | None = None,
    ) -> None:
        self.config = config
        self.evaluator = evaluator
        self.audit = audit
        self.upstream = upstream
        self.policy = policy
        self.tools_filter = tools_filter
        self.authenticator = authenticator
        self.mask_params = mask_params
        self.readiness = readiness
        # Which process ids make up the sidecar (for /readyz: operators and
        # fault tests need to know which process is the writer).
        self.processes = processes
        # Prometheus text from the other parts (pool, audit writer).
        self.metrics_extras = metrics_extras or []
        self.metrics = Metrics()
        self.killer = Killer(config.agent_pid, config.agent_pid_file)
        self.inflight = 0
        self.busy_poll = BusyPoll(config.busy_poll_us / 1e6, lambda: self.inflight > 0)
        self.connections: set[HttpConnection] = set()
        self.draining = False
        self._call_prefix = os.urandom(4).hex()
        self._call_seq = itertools.count(1)
        self._background: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._drained: asyncio.Event | None = None
        self._audit_log_throttle = LogThrottle(1.0)
        self._drop_log_throttle = LogThrottle(1.0)
        # Session ids the upstream issued in answer to an initialize: only
        # these key rate limits and audit entries; an id the agent made up
        # falls back to its subject or address (see session_key).  Oldest
        # first; forgotten on DELETE or when the table is full.
        self._issued_sessions: dict[str, None] = {}
        # Per session: request ids forwarded and not answered yet, so that a
        # GET stream resumed with Last-Event-ID may deliver their answers.
        # The value says whether the answer is a tools/list result.
        self._outstanding: dict[str, dict[Any, bool]] = {}
        # Per tool name: the Mcp-Param-* headers its inputSchema declares, as
        # the upstream last listed it (see learn_param_headers).
        self._param_headers: dict[str, mh.ToolParamHeaders] = {}
        self._param_bindings = 0
        self._param_log_throttle = LogThrottle(60.0)

    def exchange_done(self) -> None:
        self.inflight -= 1
        if self.inflight == 0 and self._drained is not None:
            self._drained.set()

    # -- small helpers -----------------------------------------------------
    def next_call_id(self) -> str:
        return f"{self._call_prefix}-{next(self._call_seq)}"

    def session_key(self, meta: mh.RequestMeta, identity: Identity | None, peer: str) -> str:
        """The key of rate limits and audit entries.

        An ``Mcp-Session-Id`` counts only when the upstream issued it (seen in
        the answer to an initialize, 2025 revisions): the agent cannot mint
        those, so a fresh made-up id per request does not buy a fresh token
        bucket.  Otherwise: the verified subject, else the peer address
        (2026-07-28 has no sessions)."""
        sid = meta.session_id
        if sid is not None and sid in self._issued_sessions and not mh.is_modern(meta):
            return sid
        if identity is not None:
            return f"sub:{identity.issuer}|{identity.subject}"
        return f"peer:{peer}"

    @staticmethod
    def client_key(identity: Identity | None, peer: str) -> str:
        """The key of the policy's ``client:`` rate limit, whatever session the
        call is in: the verified subject, else the peer address."""
        return f"peer:{peer}" if identity is None else f"sub:{identity.issuer}|{identity.subject}"

    def session_issued(self, session_id: str) -> None:
        issued = self._issued_sessions
        if session_id in issued:
            return
        if len(issued) >= _MAX_ISSUED_SESSIONS:
            # Forgetting one only makes its calls share the peer's bucket.
            oldest = next(iter(issued))
            del issued[oldest]
            self._outstanding.pop(oldest, None)
        issued[session_id] = None

    def session_deleted(self, session_id: str) -> None:
        self._issued_sessions.pop(session_id, None)
        self._outstanding.pop(session_id, None)

    def _outstanding_for(self, meta: mh.RequestMeta, session: str) -> dict[Any, bool] | None:
        """The table of unanswered request ids of this exchange's session:
        its issued ``Mcp-Session-Id``, or the session key when there is no
        session id; None for an id the upstream never issued."""
        sid = meta.session_id
        if sid is None:
            key = session
        elif sid in self._issued_sessions:
            key = sid
        else:
            return None
        table = self._outstanding.get(key)
        if table is None:
            if len(self._outstanding) >= _MAX_OUTSTANDING_SESSIONS:
                del self._outstanding[next(iter(self._outstanding))]
            table = self._outstanding[key] = {}
        return table

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- judging -----------------------------------------------------------
    async def judge(
        self,
        message: Message,
        *,
        session: str,
        origin: Literal["client", "server"],
        identity: Identity | None,
        received_ns: int,
        client: str | None = None,
    ) -> Judgement:
        """Rate limit, evaluate, audit.  Returns once the audit entry is
        durable (or refuses the message when it cannot be)."""
        metrics = self.metrics
        call_id = self.next_call_id()
        try:
            call = make_call(
                message,
                session=session,
                transport="http",
                origin=origin,
                call_id=call_id,
                identity=identity,
                now_ns=received_ns,
                client=client,
            )
        except FrameError as exc:
            # Params MCP does not allow (array params, a tool name that is
            # not a string): refused before judging, like a parse error.
            return Judgement(
                call=None,
                decision=None,
                outcome="error",
                passes=False,
                error=error_response(exc.rpc_id, exc.rpc_code, str(exc)),
                status=400,
            )
        Metrics.bump(metrics.messages, (origin, call.method or call.kind))
        # The evaluator (pool or in-process) applies the token buckets first
        # (never cached), then the decision cache, then the policy.
        t0 = time.perf_counter()
        decision = await self.evaluator.evaluate(call)
        metrics.evaluate_latency.observe(time.perf_counter() - t0)
        if decision.cached:
            metrics.cached_decisions += 1
        verdict = decision.verdict
        passes = verdict in PASSING_VERDICTS
        outcome = judged_outcome(verdict, passes, self.config.dry_run)
        t1 = time.perf_counter()
        try:
            if decision.category == AUDIT_FAILED_CATEGORY:
                # The worker that decided could not make its entry durable.
                raise AuditError(decision.reason)
            if not decision.durable:
                # Decided here (a cache hit, a rate limit, a pool failure) or
                # by an evaluator that does not write: the entry is ours.
                latency_us = (time.time_ns() - received_ns) // 1000
                event = self._decision_event(call, decision, outcome, latency_us)
                await self.audit.record(event)
                metrics.audit_latency.observe(time.perf_counter() - t1)
        except AuditError as exc:
            metrics.audit_failures += 1
            metrics.audit_latency.observe(time.perf_counter() - t1)
            Metrics.bump(metrics.decisions, "error")
            if self._audit_log_throttle.allow():
                log.error(
                    "audit entry for %s could not be made durable (%d more since the last "
                    "report): %s; refusing",
                    call_id,
                    self._audit_log_throttle.take_suppressed(),
                    exc,
                )
            return Judgement(
                call=call,
                decision=decision,
                outcome="error",
                passes=False,
                error=error_response(
                    call.rpc_id,
                    AUDIT_UNAVAILABLE,
                    f"Refused: the audit log is unavailable ({exc}); nothing was forwarded",
                    {"decision_id": call_id},
                ),
                status=503,
            )
        metrics.decision_latency.observe(time.time_ns() / 1e9 - received_ns / 1e9)
        Metrics.bump(metrics.decisions, outcome)
        if passes or outcome == "dry_run_deny":
            forward = None
            if (
                verdict == "redact"
                and decision.redactions
                and isinstance(message, Request | Notification)
            ):
                params = apply_redactions(_params(message), decision.redactions)
                forward = msgspec.structs.replace(message, params=params)
            return Judgement(
                call=call, decision=decision, outcome=outcome, passes=True, forward=forward
            )
        if decision.category == "rate_limit":
            metrics.rate_limited += 1
            retry_ms = decision.retry_after_ms or 1000
            return Judgement(
                call=call,
                decision=decision,
                outcome=outcome,
                passes=False,
                error=error_response(
                    call.rpc_id,
                    RATE_LIMITED,
                    f"Rate limit exceeded ({decision.rule_id}); retry after {retry_ms} ms",
                    {"decision_id": call_id, "rule": decision.rule_id, "retry_after_ms": retry_ms},
                ),
                status=429,
                headers=((b"retry-after", str(max(1, -(-retry_ms // 1000))).encode()),),
            )
        # Identity wiring (issue 6): missing scopes or claims -> 403 with
        # WWW-Authenticate: Bearer error="insufficient_scope", scope="..."
        step_up = self.authenticator.step_up(decision) if self.authenticator else None
        if step_up is not None:
            return Judgement(
                call=call,
                decision=decision,
                outcome=outcome,
                passes=False,
                error=error_response(
                    call.rpc_id, FORBIDDEN, denial_message(decision), denial_data(decision)
                ),
                status=403,
                headers=step_up,
            )
        return Judgement(
            call=call,
            decision=decision,
            outcome=outcome,
            passes=False,
            error=error_response(
                call.rpc_id, POLICY_DENIED, denial_message(decision), denial_data(decision)
            ),
        )

    def _decision_event(
        self, call: Call, decision: Decision, outcome: AuditOutcome, latency_us: int
    ) -> AuditEvent:
        mask = self.mask_params if self.config.log_params else None
        return judged_event(call, decision, outcome, latency_us, mask)

    async def record_quietly(self, event: AuditEvent) -> None:
        try:
            await self.audit.record(event)
        except AuditError as exc:
            self.metrics.audit_failures += 1
            log.error("audit entry %s could not be written: %s", event.event, exc)

    async def audit_refusal(
        self, peer_host: str, reply: mh.HttpReply, stage: str, session: str | None = None
    ) -> None:
        """An entry for a request refused before it could be judged (bad
        HTTP, JSON or JSON-RPC, a header that lies, an oversize body): it
        forwards nothing, but a reviewer must see that it came."""
        Metrics.bump(self.metrics.refused, stage)
        code, message, rpc_id = _reply_error(reply)
        detail: dict[str, Any] = {
            "direction": "client",
            "stage": stage,
            "http_status": reply.status,
            "peer": peer_host,
        }
        if code is not None:
            detail["code"] = code
        await self.record_quietly(
            AuditEvent(
                event="error",
                session=session,
                transport="http",
                rpc_id=scrubbed(rpc_id) if isinstance(rpc_id, int | str) else None,
                reason=scrubbed(
                    f"refused before judging ({stage}): {message}"[:_REFUSAL_REASON_MAX]
                ),
                detail=detail,
            )
        )

    async def refuse_unjudged(
        self,
        conn: HttpConnection,
        reply: mh.HttpReply,
        stage: str,
        session: str | None = None,
    ) -> None:
        await self.audit_refusal(conn.peer_host, reply, stage, session)
        conn.send_reply(reply)

    # -- Mcp-Param-* headers (2026-07-28) ---------------------------------------
    def learn_param_headers(self, result: Any) -> None:
        """Remember the Mcp-Param-* bindings of the tools in a tools/list
        result from the upstream.  Each listed tool's latest definition wins
        (pages of a paginated list add up); bounded in tools and bindings."""
        table = self._param_headers
        for name, tool in mh.tools_param_headers(result).items():
            if tool.invalid is not None and self._param_log_throttle.allow():
                log.warning(
                    "tool %r: invalid x-mcp-header annotation, not enforced (%s)",
                    scrubbed(name)[:128],
                    tool.invalid,
                )
            old = table.pop(name, None)
            if old is not None:
                self._param_bindings -= len(old.bindings)
            table[name] = tool
            self._param_bindings += len(tool.bindings)
        while table and (
            len(table) > _MAX_PARAM_TOOLS or self._param_bindings > _MAX_PARAM_BINDINGS
        ):
            oldest = next(iter(table))
            self._param_bindings -= len(table.pop(oldest).bindings)

    def forget_param_headers(self) -> None:
        self._param_headers.clear()
        self._param_bindings = 0

    def check_param_headers(
        self, headers: list[tuple[bytes, bytes]], message: Request
    ) -> mh.HttpReply | None:
        """A 2026-07-28 tools/call's Mcp-Param-* headers against its
        arguments, for a tool whose schema the upstream listed.  A tool not
        listed yet (or listed with invalid annotations) is not checked here:
        the upstream, which knows its schema, still checks."""
        if message.method != "tools/call":
            return None
        params = _params(message)
        if not isinstance(params, dict):
            return None
        name = params.get("name")
        tool = self._param_headers.get(name) if isinstance(name, str) else None
        if tool is None or not tool.bindings:
            return None
        arguments = params.get("arguments")
        if arguments is None:
            arguments = {}
        elif not isinstance(arguments, dict):
            return None  # refused as invalid params when judged
        return mh.check_param_headers_against(tool, headers, arguments, rpc_id=message.id)

    def redacted_param_headers(self, meta: mh.RequestMeta, forward: Message) -> mh.RequestMeta:
        """After a redaction the body changed: its Mcp-Param-* mirrors must
        not carry the values it no longer holds (see rebuild_param_headers)."""
        params = _params(forward)
        name = params.get("name") if isinstance(params, dict) else None
        tool = None
        if _method(forward) == "tools/call" and isinstance(name, str):
            tool = self._param_headers.get(name)
            if tool is not None and tool.invalid is not None:
                tool = None
        arguments = params.get("arguments") if isinstance(params, dict) else None
        forwarded = mh.rebuild_param_headers(tool, meta.forward, arguments)
        return msgspec.structs.replace(meta, forward=forwarded)

    # -- kill modes ----------------------------------------------------------
    async def enforce_kill(self, conn: HttpConnection, judgement: Judgement) -> bool:
        """After a denial: returns True when the connection must close."""
        mode = self.config.kill_mode
        if mode == "none" or self.config.dry_run:
            return False
        close = mode in ("connection", "both")
        if mode in ("process", "both"):
            ok, detail, pid = self.killer.kill(conn.peer, conn.local)
            Metrics.bump(self.metrics.kills, "ok" if ok else "failed")
            if not ok and mode == "both":
                detail += "; fell back to closing the connection"
            (log.warning if ok else log.error)("kill-mode %s: %s", mode, detail)
            await self.record_quietly(
                AuditEvent(
                    event="error",
                    session=judgement.call.session if judgement.call else None,
                    call_id=judgement.call.call_id if judgement.call else None,
                    reason=detail,
                    detail={"action": "kill", "kill_mode": mode, "ok": ok, "pid": pid},
                )
            )
        return close

    # -- endpoints -------------------------------------------------------------
    async def handle(self, conn: HttpConnection, req: mh.RequestHead, body: bytes) -> None:
        method = req.method
        target = req.target
        path = target.split(b"?", 1)[0]
        received_ns = conn.request_started_ns
        status_holder = conn
        try:
            if self.authenticator is not None:
                host = mh.header_value(req.headers, b"host")
                reply = self.authenticator.serve(method, path, host)
                if reply is not None:
                    conn.send_reply(reply)
                    return
            if path in (b"/mcp", b"/"):
                if method == b"POST":
                    await self.mcp_post(conn, req, body, received_ns, path)
                elif method == b"GET":
                    await self.mcp_get(conn, req, path)
                elif method == b"DELETE":
                    await self.mcp_delete(conn, req, path)
                else:
                    conn.send_reply(
                        mh.HttpReply(
                            status=405,
                            body=b"",
                            content_type=None,
                            headers=((b"allow", b"GET, POST, DELETE"),),
                        )
                    )
            elif path == b"/healthz" and method in (b"GET", b"HEAD"):
                conn.send_reply(mh.plain_reply(200, "ok\n"))
            elif path == b"/readyz" and method in (b"GET", b"HEAD"):
                await self.readyz(conn)
            elif path == b"/metrics" and method in (b"GET", b"HEAD"):
                conn.send_reply(
                    mh.HttpReply(
                        status=200,
                        body=await self.render_all_metrics(),
                        content_type=b"text/plain; version=0.0.4; charset=utf-8",
                    )
                )
            else:
                conn.send_reply(mh.plain_reply(404, "not found\n"))
        finally:
            Metrics.bump(
                self.metrics.http_requests, (method.decode("latin-1"), status_holder.last_status)
            )

    async def readyz(self, conn: HttpConnection) -> None:
        checks: dict[str, bool] = {}
        if self.readiness is not None:
            try:
                checks = await self.readiness()
            except Exception as exc:  # noqa: BLE001 -- a broken probe means "not ready"
                checks = {"probe": False}
                log.error("readiness probe failed: %s", exc)
        checks["upstream"] = await self.upstream.probe(1.0)
        ready = all(checks.values()) and not self.draining
        report: dict[str, Any] = {"ready": ready, "checks": checks, "draining": self.draining}
        if self.processes is not None:
            report["processes"] = self.processes()
        body = orjson.dumps(report)
        conn.send_reply(mh.HttpReply(status=200 if ready else 503, body=body))

    def render_metrics(self) -> str:
        m = self.metrics
        lines: list[str] = []

        def counter(name: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} counter")

        counter("agentwall_http_requests_total", "HTTP requests by method and status.")
        for (method, status), n in sorted(m.http_requests.items()):
            lines.append(
                f'agentwall_http_requests_total{{method="{_esc(method)}",status="{status}"}} {n}'
            )
        counter("agentwall_messages_total", "JSON-RPC messages judged, by origin and method.")
        for (origin, method), n in sorted(m.messages.items()):
            lines.append(
                f'agentwall_messages_total{{origin="{origin}",method="{_esc(method)}"}} {n}'
            )
        counter("agentwall_decisions_total", "Decisions by audited outcome.")
        for outcome, n in sorted(m.decisions.items()):
            lines.append(f'agentwall_decisions_total{{outcome="{outcome}"}} {n}')
        counter(
            "agentwall_decision_cache_hits_total", "Decisions served by the shared decision cache."
        )
        lines.append(f"agentwall_decision_cache_hits_total {m.cached_decisions}")
        counter("agentwall_rate_limited_total", "Calls refused by a rate limit.")
        lines.append(f"agentwall_rate_limited_total {m.rate_limited}")
        counter("agentwall_audit_failures_total", "Audit entries that could not be made durable.")
        lines.append(f"agentwall_audit_failures_total {m.audit_failures}")
        counter("agentwall_upstream_errors_total", "Upstream failures by kind.")
        for kind, n in sorted(m.upstream_errors.items()):
            lines.append(f'agentwall_upstream_errors_total{{kind="{kind}"}} {n}')
        counter(
            "agentwall_refused_unjudged_total",
            "Requests refused before judging (malformed, oversize, lying headers), by stage.",
        )
        for stage, n in sorted(m.refused.items()):
            lines.append(f'agentwall_refused_unjudged_total{{stage="{stage}"}} {n}')
        counter("agentwall_overloaded_total", "Requests refused because the proxy was at capacity.")
        lines.append(f"agentwall_overloaded_total {m.overloaded}")
        counter("agentwall_kills_total", "Kill-mode process kills by result.")
        for result, n in sorted(m.kills.items()):
            lines.append(f'agentwall_kills_total{{result="{result}"}} {n}')
        counter("agentwall_sse_events_total", "SSE events relayed to agents.")
        lines.append(f"agentwall_sse_events_total {m.sse_events}")
        lines.append("# TYPE agentwall_connections_open gauge")
        lines.append(f"agentwall_connections_open {m.connections_open}")
        lines.append("# TYPE agentwall_inflight gauge")
        lines.append(f"agentwall_inflight {self.inflight}")
        # A build without the C extension is slower, not less safe: say which
        # one runs, so a figure can be read against it.
        lines.append("# HELP agentwall_native_info Parts running as a C extension or fallback.")
        lines.append("# TYPE agentwall_native_info gauge")
        lines.append(f'agentwall_native_info{{part="http_head_scan",impl="{mh.scan_impl()}"}} 1')
        lines.append(
            f'agentwall_native_info{{part="json_syntax_counts",impl="{jsonrpc_counts_impl()}"}} 1'
        )
        lines.append(f'agentwall_native_info{{part="hot_modules",impl="{_HOT_IMPL}"}} 1')
        for name, hist, text in (
            (
                "agentwall_decision_seconds",
                m.decision_latency,
                "Request received to decision durable.",
            ),
            (
                "agentwall_evaluate_seconds",
                m.evaluate_latency,
                "Policy evaluation (worker round trip).",
            ),
            ("agentwall_audit_seconds", m.audit_latency, "Audit record until durable (fsync)."),
            (
                "agentwall_upstream_seconds",
                m.upstream_latency,
                "Upstream request until response head.",
            ),
        ):
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} histogram")
            lines.extend(hist.render(name))
        return "\n".join(lines) + "\n"

    async def render_all_metrics(self) -> bytes:
        parts = [self.render_metrics()]
        for extra in self.metrics_extras:
            try:
                parts.append(await extra())
            except Exception as exc:  # noqa: BLE001 -- component stats are best effort
                log.warning("metrics source failed: %s", exc)
        return "".join(parts).encode()

    # -- MCP POST ---------------------------------------------------------------
    async def _identify(
        self, conn: HttpConnection, meta: mh.RequestMeta, path: bytes
    ) -> Identity | mh.HttpReply | None:
        """The verified caller, or the reply for a refused authentication
        (the gate writes its audit entry before returning it)."""
        if self.authenticator is None:
            return None
        return await self.authenticator.authenticate(meta, conn.peer_host)

    def _precheck(
        self, conn: HttpConnection, req: mh.RequestHead, meta: mh.RequestMeta
    ) -> mh.HttpReply | None:
        return (
            mh.check_origin_and_host(meta, self.config.origin_policy)
            or mh.check_request_head(meta, req.method)
            or (mh.check_param_headers(req.headers) if meta.param_headers else None)
        )

    async def _admit(
        self, conn: HttpConnection, req: mh.RequestHead, path: bytes, body: bytes | None = None
    ) -> tuple[mh.RequestMeta, Identity | None] | None:
        """The request head's checks and the caller's identity, shared by
        POST, GET and DELETE; None when the request was refused and answered
        (a refused head is audited; the identity gate audits its own)."""
        meta = mh.read_request_meta(req.headers)
        reply = self._precheck(conn, req, meta)
        if reply is not None:
            if body is not None and reply.status == 400:
                reply = _with_request_id(reply, body, self.config.max_body_bytes)
            await self.refuse_unjudged(conn, reply, "request_head")
            return None
        who = None if self.authenticator is None else await self._identify(conn, meta, path)
        if isinstance(who, mh.HttpReply):
            conn.send_reply(who)
            return None
        return meta, who

    async def mcp_post(
        self, conn: HttpConnection, req: mh.RequestHead, body: bytes, received_ns: int, path: bytes
    ) -> None:
        admitted = await self._admit(conn, req, path, body)
        if admitted is None:
            return
        meta, identity = admitted
        try:
            parsed = parse(body, max_size=self.config.max_body_bytes)
        except FrameError as exc:
            await self.refuse_unjudged(
                conn,
                mh.HttpReply(
                    status=400,
                    body=error_response(getattr(exc, "rpc_id", None), exc.rpc_code, str(exc)),
                ),
                "body",
            )
            return
        session = self.session_key(meta, identity, conn.peer_host)
        message = parsed.message
        if isinstance(message, list):
            await self._post_batch(conn, meta, message, session, identity, received_ns)
            return
        kind = _kind(message)
        reply = mh.check_body_headers(
            meta,
            kind=kind,
            method=_method(message),
            params=_params(message),
            rpc_id=getattr(message, "id", None),
        )
        if reply is not None:
            await self.refuse_unjudged(conn, reply, "headers_vs_body", session)
            return
        if isinstance(message, Request) and mh.is_modern(meta):
            # Before judging: the policy and the audit entry see the body,
            # routers may act on the headers; they must say the same thing.
            reply = self.check_param_headers(req.headers, message)
            if reply is not None:
                await self.refuse_unjudged(conn, reply, "param_headers", session)
                return
        judgement = await self.judge(
            message, session=session, origin="client", identity=identity, received_ns=received_ns,
            client=self.client_key(identity, conn.peer_host),
        )  # fmt: skip
        if not judgement.passes:
            await self._refuse(conn, judgement, kind)
            return
        wire = parsed.wire if judgement.forward is None else encode_message(judgement.forward)
        if judgement.forward is not None and meta.param_headers:
            meta = self.redacted_param_headers(meta, judgement.forward)
        filter_ids: set[Any] = set()
        pending: list[Any] = []
        if isinstance(message, Request):
            pending.append(message.id)
            if message.method == "tools/list":
                filter_ids.add(message.id)
        if conn.closed and kind == "request" and mh.is_modern(meta):
            # 2026-07-28: closing the stream is the cancellation; the agent
            # left before we forwarded, so the call is not made.
            return
        ctx = ExchangeContext(
            session,
            identity,
            meta,
            filter_ids,
            pending,
            initialize=kind == "request" and _method(message) == "initialize",
            outstanding=self._outstanding_for(meta, session) if pending else None,
        )
        await self._forward_post(conn, meta, wire, ctx, local_errors=[])

    async def _refuse(self, conn: HttpConnection, judgement: Judgement, kind: str) -> None:
        close = False
        if judgement.outcome == "deny":
            close = await self.enforce_kill(conn, judgement)
        assert judgement.error is not None
        status = judgement.status
        if kind != "request" and status == 200:
            # A notification or response cannot carry an error answer; the
            # transport says: an HTTP error status, body with no id.
            status = 403
        conn.send_reply(
            mh.HttpReply(
                status=status, body=judgement.error, headers=judgement.headers, close=close
            )
        )

    async def _post_batch(
        self,
        conn: HttpConnection,
        meta: mh.RequestMeta,
        items: list[Message | FrameError],
        session: str,
        identity: Identity | None,
        received_ns: int,
    ) -> None:
        reply = mh.check_batch_allowed(meta)
        if reply is None and (meta.mcp_method is not None or meta.mcp_name is not None):
            reply = mh.mismatch("Mcp-Method/Mcp-Name headers cannot describe a batch")
        if reply is not None:
            await self.refuse_unjudged(conn, reply, "batch", session)
            return
        local: list[bytes] = []
        forward: list[Message | FrameError] = []
        filter_ids: set[Any] = set()
        pending: list[Any] = []
        close = False
        redacted = False
        for item in items:
            if isinstance(item, FrameError):
                answer = error_response(getattr(item, "rpc_id", None), item.rpc_code, str(item))
                await self.audit_refusal(
                    conn.peer_host, mh.HttpReply(status=200, body=answer), "batch_item", session
                )
                local.append(answer)
                continue
            judgement = await self.judge(
                item, session=session, origin="client", identity=identity, received_ns=received_ns,
                client=self.client_key(identity, conn.peer_host),
            )  # fmt: skip
            if judgement.passes:
                forward.append(judgement.forward or item)
                redacted = redacted or judgement.forward is not None
                if isinstance(item, Request):
                    pending.append(item.id)
                    if item.method == "tools/list":
                        filter_ids.add(item.id)
                continue
            if judgement.outcome == "deny":
                close = await self.enforce_kill(conn, judgement) or close
            if isinstance(item, Request) and judgement.error is not None:
                local.append(judgement.error)
        if not forward:
            if local:
                conn.send_reply(
                    mh.HttpReply(status=200, body=b"[" + b",".join(local) + b"]", close=close)
                )
            else:
                conn.send_reply(mh.HttpReply(status=202, content_type=None, close=close))
            return
        ctx = ExchangeContext(
            session,
            identity,
            meta,
            filter_ids,
            pending,
            initialize=any(isinstance(m, Request) and m.method == "initialize" for m in forward),
            outstanding=self._outstanding_for(meta, session) if pending else None,
        )
        if redacted and meta.param_headers:
            # Which item a header mirrors is unknown in a batch: drop them all.
            meta = msgspec.structs.replace(
                meta, forward=mh.rebuild_param_headers(None, meta.forward, None)
            )
        await self._forward_post(
            conn, meta, encode_message(forward), ctx, local_errors=local, batch=True
        )
        if close:
            conn.close_after_response()

    def _upstream_failure(
        self,
        conn: HttpConnection,
        exc: UpstreamError,
        rpc_ids: list[Any],
        local_errors: list[bytes] | None = None,
    ) -> None:
        timeout = isinstance(exc, UpstreamTimeout)
        Metrics.bump(self.metrics.upstream_errors, "timeout" if timeout else "unavailable")
        code = UPSTREAM_TIMEOUT if timeout else UPSTREAM_UNAVAILABLE
        what = "did not answer in time" if timeout else "is unavailable"
        message = f"Upstream MCP server {what}: {exc}"
        ids = rpc_ids or [None]
        bodies = [error_response(rpc_id, code, message) for rpc_id in ids]
        if local_errors:
            bodies += local_errors
        body = bodies[0] if len(bodies) == 1 else b"[" + b",".join(bodies) + b"]"
        conn.send_reply(mh.HttpReply(status=504 if timeout else 502, body=body))

    async def _forward_post(
        self,
        conn: HttpConnection,
        meta: mh.RequestMeta,
        wire: bytes,
        ctx: ExchangeContext,
        *,
        local_errors: list[bytes],
        batch: bool = False,
    ) -> None:
        headers = meta.forward
        if meta.accept is None:
            # Clients must send it; a bare curl does not.  The upstream would
            # answer 406, so supply what every MCP client means.
            headers = [*headers, (b"accept", b"application/json, text/event-stream")]
        outstanding = ctx.outstanding
        if outstanding is not None:
            for rpc_id in ctx.pending_ids:
                outstanding[rpc_id] = rpc_id in ctx.filter_ids
            while len(outstanding) > _MAX_OUTSTANDING_IDS:
                del outstanding[next(iter(outstanding))]
        t0 = time.perf_counter()
        try:
            resp = await self.upstream.request(
                b"POST", headers, wire, head_timeout=self.config.upstream_timeout
            )
        except UpstreamError as exc:
            self._upstream_failure(conn, exc, ctx.settle(), local_errors)
            return
        self.metrics.upstream_latency.observe(time.perf_counter() - t0)
        await self._relay(conn, resp, ctx, local_errors=local_errors)

    async def _relay(
        self,
        conn: HttpConnection,
        resp: UpstreamResponse,
        ctx: ExchangeContext,
        *,
        local_errors: list[bytes] | None = None,
    ) -> None:
        """The upstream's answer to the agent.  Nothing the upstream sends
        reaches the agent as the upstream's bytes: a JSON body and every SSE
        event are parsed strictly, their server requests and notifications
        judged, their responses checked against the ids of this exchange,
        and what is left is re-encoded.  What cannot be parsed strictly
        becomes a JSON-RPC error (fail closed).  Only an error status's
        non-JSON text (a diagnostic no MCP client reads as a message) and
        empty bodies pass as they are."""
        local_errors = local_errors or []
        status = resp.status
        ok = 200 <= status < 300
        relay_headers, content_type = mh.response_headers_to_relay(resp.headers)
        assigned = resp.header(mh.H_SESSION_ID) if ok else None
        if assigned is not None:
            session_id = assigned.decode("latin-1")
            if ctx.initialize:
                self.session_issued(session_id)
            if (
                self.authenticator is not None
                and ctx.identity is not None
                and session_id != ctx.meta.session_id
            ):
                # Identity wiring (issue 6): bind a session the upstream just
                # assigned to the subject that opened it.
                self.authenticator.session_assigned(session_id, ctx.identity)
        media = mh.media_type(content_type)
        if media == "text/event-stream" and status == 200:
            await self._relay_sse(
                conn, resp, ctx, [*relay_headers, (b"content-type", _SSE)], local_errors
            )
            return
        try:
            body = await resp.read(self.config.max_response_bytes, self.config.upstream_timeout)
        except UpstreamError as exc:
            self._upstream_failure(conn, exc, ctx.settle(), local_errors)
            return
        out_type = content_type
        if body and (ok or "json" in media):
            # Whatever its declared type: a 2xx body must be JSON-RPC, and a
            # client may read an error status's JSON body as a message too.
            status, body = await self._relay_json(status, body, ctx, local_errors)
            out_type = _JSON if body else None
        elif not body and ok and local_errors:
            status = 200
            body = local_errors[0] if len(local_errors) == 1 else _join(local_errors)
            out_type = _JSON
        if ctx.drops > _DROPS_AUDITED:
            await self._finish_drops(ctx)
        # Exactly one Content-Type, the one the body was judged by (two
        # would let clients that read the first and the last disagree).
        conn.send_reply(
            mh.HttpReply(status=status, body=body, content_type=out_type, headers=relay_headers)
        )

    async def _relay_json(
        self, status: int, body: bytes, ctx: ExchangeContext, local_errors: list[bytes]
    ) -> tuple[int, bytes]:
        """A JSON body from the upstream, judged message by message, as the
        (status, body) the agent receives."""
        ok = 200 <= status < 300
        try:
            parsed = parse(body, max_size=self.config.max_response_bytes)
        except FrameError as exc:
            # Fail closed: never the raw body (a lone surrogate, a duplicate
            # key: two parsers would read two different answers).
            reason = f"the upstream's answer is not a valid JSON-RPC message ({exc})"
            await self._dropped(ctx, reason, exc.rpc_id)
            ids: list[Any] = ctx.settle() or [None]
            errors = [
                error_response(rpc_id, INTERNAL_ERROR, reason + "; it was not relayed")
                for rpc_id in ids
            ]
            errors += local_errors
            return (502 if ok else status), errors[0] if len(errors) == 1 else _join(errors)
        single = not isinstance(parsed.message, list)
        items: list[Message | FrameError] = (
            [cast(Message, parsed.message)] if single else cast(list[Any], parsed.message)
        )
        out: list[bytes] = []
        intact = True  # ``out`` is the upstream's message as parsed
        for item in items:
            if type(item) is Response or type(item) is ErrorResponse:
                kept, refused = self._upstream_response(item, ctx)
                if refused is not None:
                    await self._dropped(ctx, refused, item.id)
            else:
                kept = await self._judge_upstream_item(item, ctx)
            if kept is None:
                intact = False
            elif kept is item:
                out.append(parsed.wire if single else encode_message(item))
            else:
                intact = False
                out.append(encode_message(kept))
        if ok:
            # A request this POST carried must not go unanswered: the agent
            # would wait forever for what the upstream did not (validly) send.
            for rpc_id in ctx.settle():
                intact = False
                out.append(
                    error_response(
                        rpc_id,
                        INTERNAL_ERROR,
                        "the upstream's answer held no valid response to this request",
                    )
                )
        if local_errors:
            intact = False
            out += local_errors
        if single and intact:
            return status, parsed.wire
        if not out:
            return (202 if ok else status), b""
        if single and len(out) == 1:
            return status, out[0]
        return status, _join(out)

    async def _judge_upstream_item(
        self, item: Message | FrameError, ctx: ExchangeContext
    ) -> Message | None:
        """One message from the upstream: what to relay (the same object when
        unchanged), or None when it must not reach the agent."""
        if isinstance(item, FrameError):
            await self._dropped(ctx, f"an invalid message from the upstream ({item})", item.rpc_id)
            return None
        if isinstance(item, Response | ErrorResponse):
            kept, refused = self._upstream_response(item, ctx)
            if refused is not None:
                await self._dropped(ctx, refused, item.id)
            return kept
        if type(item) is Notification and item.method == "notifications/tools/list_changed":
            # The upstream's tools changed: its x-mcp-header declarations may
            # have too.  Forget them until the next list rather than refuse a
            # valid call, or pass a lying one, on a stale schema.
            self.forget_param_headers()
        # A request or notification from the server: judged like any other.
        judgement = await self.judge(
            item,
            session=ctx.session,
            origin="server",
            identity=ctx.identity,
            received_ns=time.time_ns(),
        )
        if judgement.passes:
            return judgement.forward or item
        if isinstance(item, Request):
            self.spawn(self._answer_server_request(ctx, item, judgement))
        return None

    def _upstream_response(
        self, item: Response | ErrorResponse, ctx: ExchangeContext
    ) -> tuple[Message | None, str | None]:
        """A response from the upstream: what to relay, or None and why not
        (synchronous: the common case needs no coroutine)."""
        rpc_id = item.id
        if rpc_id is None:
            # An error about the request as a whole (the upstream could not
            # read its id): it names no request, so it cannot answer another.
            return item, None
        must_filter = ctx.accept_response(rpc_id)
        if must_filter is None:
            return None, (
                "a response from the upstream to an id the agent did not send in this "
                "exchange, or already answered"
            )
        if must_filter and isinstance(item, Response):
            # The unfiltered list: a call's headers are checked against the
            # schema the upstream itself will check them against.
            self.learn_param_headers(item.result)
            if self.config.filter_tools_list and self.tools_filter is not None:
                return msgspec.structs.replace(
                    item, result=self._filtered_tools(item.result, ctx)
                ), None
        return item, None

    def _filtered_tools(self, result: Any, ctx: ExchangeContext) -> Any:
        """tools/list result -> only the tools this caller may call."""
        assert self.tools_filter is not None
        try:
            return self.tools_filter(self.policy, result, ctx.identity)
        except Exception as exc:  # noqa: BLE001 -- fail closed: show no tools
            log.error("tools/list filtering failed: %s", exc)
            return {"tools": []}

    async def _dropped(self, ctx: ExchangeContext, reason: str, rpc_id: Any) -> None:
        """Something the upstream sent that the agent will not see: logged,
        and audited (the first few of an exchange one by one)."""
        ctx.drops += 1
        Metrics.bump(self.metrics.upstream_errors, "dropped_message")
        if ctx.drops > _DROPS_AUDITED:
            return
        if self._drop_log_throttle.allow():
            log.warning(
                "dropped a message from the upstream (%d more since the last report): %s",
                self._drop_log_throttle.take_suppressed(),
                reason,
            )
        await self.record_quietly(
            AuditEvent(
                event="error",
                session=ctx.session,
                transport="http",
                rpc_id=scrubbed(rpc_id),
                reason=scrubbed(f"dropped {reason}"),
                detail={"direction": "server", "action": "drop"},
            )
        )

    async def _finish_drops(self, ctx: ExchangeContext) -> None:
        if ctx.drops > _DROPS_AUDITED:
            more = ctx.drops - _DROPS_AUDITED
            ctx.drops = _DROPS_AUDITED
            await self.record_quietly(
                AuditEvent(
                    event="error",
                    session=ctx.session,
                    transport="http",
                    reason=f"dropped {more} more invalid or unsolicited messages from the upstream",
                    detail={"direction": "server", "action": "drop", "count": more},
                )
            )

    async def _relay_sse(
        self,
        conn: HttpConnection,
        resp: UpstreamResponse,
        ctx: ExchangeContext,
        relay_headers: list[tuple[bytes, bytes]],
        local_errors: list[bytes],
    ) -> None:
        if mh.header_value(relay_headers, b"x-accel-buffering") is None:
            relay_headers.append((b"x-accel-buffering", b"no"))
        conn.start_stream(resp.status, relay_headers)
        conn.on_lost = resp.close
        for err in local_errors:
            conn.send_chunk(mh.encode_sse_event(err, event="message"))
        parser = mh.SseParser()
        idle = self.config.upstream_stream_idle
        failure: str | None = None
        try:
            while True:
                if conn.closed:
                    resp.close()
                    return
                chunk = await resp.next_chunk(idle)
                events = parser.feed(chunk) if chunk is not None else parser.close()
                out: list[bytes] = []
                for event in events:
                    relayed = await self._inspect_event(event, ctx)
                    if relayed:
                        out.append(relayed)
                if ctx.drops > _DROPS_AUDITED:
                    await self._finish_drops(ctx)
                if out:
                    self.metrics.sse_events += len(out)
                    conn.send_chunk(out[0] if len(out) == 1 else b"".join(out))
                    await conn.drain()
                if chunk is None:
                    break
        except UpstreamTimeout as exc:
            failure = f"upstream stream stalled: {exc}"
            code = UPSTREAM_TIMEOUT
        except (UpstreamError, mh.SseError) as exc:
            failure = f"upstream stream failed: {exc}"
            code = UPSTREAM_UNAVAILABLE
        conn.on_lost = None
        if failure is not None:
            resp.close()
            Metrics.bump(self.metrics.upstream_errors, "stream")
            # The status line is gone; answer each request still waiting so
            # the agent does not hang.
            for rpc_id in ctx.settle():
                conn.send_chunk(
                    mh.encode_sse_event(error_response(rpc_id, code, failure), event="message")
                )
        conn.end_stream()

    async def _inspect_event(self, event: mh.SseEvent, ctx: ExchangeContext) -> bytes | None:
        """One SSE event: judged like a JSON body, relayed as our own event
        around our re-encoding (None: nothing of it may reach the agent)."""
        data = event.data
        if not data:
            return event.raw  # priming event (id only), retry, keep-alive comment
        try:
            parsed = parse(data, max_size=self.config.max_response_bytes)
        except FrameError as exc:
            # Fail closed: an ambiguous message from the server is not
            # delivered; a waiting request gets an error instead.
            rpc_id = exc.rpc_id
            await self._dropped(ctx, f"an invalid message from the upstream ({exc})", rpc_id)
            if rpc_id is not None and ctx.accept_response(rpc_id) is not None:
                return mh.encode_sse_event(
                    error_response(
                        rpc_id, INTERNAL_ERROR, f"upstream sent an invalid message: {exc}"
                    ),
                    event_id=event.id,
                    event=event.event,
                    retry=event.retry,
                )
            return None
        if isinstance(parsed.message, list):
            kept_items: list[Message | FrameError] = []
            for item in parsed.message:
                if type(item) is Response or type(item) is ErrorResponse:
                    kept, refused = self._upstream_response(item, ctx)
                    if refused is not None:
                        await self._dropped(ctx, refused, item.id)
                else:
                    kept = await self._judge_upstream_item(item, ctx)
                if kept is not None:
                    kept_items.append(kept)
            if not kept_items:
                return None
            payload = encode_message(kept_items)
        else:
            if type(parsed.message) is Response or type(parsed.message) is ErrorResponse:
                kept, refused = self._upstream_response(parsed.message, ctx)
                if refused is not None:
                    await self._dropped(ctx, refused, parsed.message.id)
            else:
                kept = await self._judge_upstream_item(parsed.message, ctx)
            if kept is None:
                return None
            payload = parsed.wire if kept is parsed.message else encode_message(kept)
        return mh.encode_sse_event(payload, event_id=event.id, event=event.event, retry=event.retry)

    async def _answer_server_request(
        self, ctx: ExchangeContext, request: Request, judgement: Judgement
    ) -> None:
        """A server->client request the policy refused never reaches the
        agent; the server gets the refusal as the client's answer so it does
        not wait forever."""
        assert judgement.error is not None
        headers = [
            (n, v) for n, v in ctx.meta.forward if n in (mh.H_SESSION_ID, mh.H_PROTOCOL_VERSION)
        ]
        headers += [(b"content-type", _JSON), (b"accept", b"application/json, text/event-stream")]
        try:
            resp = await self.upstream.request(
                b"POST", headers, judgement.error, head_timeout=self.config.upstream_timeout
            )
            await resp.read(self.config.max_response_bytes, self.config.upstream_timeout)
        except UpstreamError as exc:
            log.warning(
                "could not return the refusal of %s to the upstream: %s", request.method, exc
            )

    # -- MCP GET / DELETE -----------------------------------------------------------
    async def mcp_get(self, conn: HttpConnection, req: mh.RequestHead, path: bytes) -> None:
        admitted = await self._admit(conn, req, path)
        if admitted is None:
            return
        meta, who = admitted
        session = self.session_key(meta, who, conn.peer_host)
        try:
            resp = await self.upstream.request(
                b"GET",
                meta.forward,
                head_timeout=self.config.upstream_timeout,
            )
        except UpstreamError as exc:
            self._upstream_failure(conn, exc, [])
            return
        # A stream resumed with Last-Event-ID may replay the answers still
        # owed to requests of this session (2025-11-25 polling).
        resume = self._outstanding_for(meta, session) if meta.last_event_id is not None else None
        await self._relay(conn, resp, ExchangeContext(session, who, meta, set(), [], resume=resume))

    async def mcp_delete(self, conn: HttpConnection, req: mh.RequestHead, path: bytes) -> None:
        admitted = await self._admit(conn, req, path)
        if admitted is None:
            return
        meta, who = admitted
        try:
            resp = await self.upstream.request(
                b"DELETE",
                meta.forward,
                head_timeout=self.config.upstream_timeout,
            )
        except UpstreamError as exc:
            self._upstream_failure(conn, exc, [])
            return
        session = self.session_key(meta, who, conn.peer_host)
        if meta.session_id and 200 <= resp.status < 300:
            self.session_deleted(meta.session_id)
            if self.authenticator is not None:
                self.authenticator.session_ended(meta.session_id)  # identity wiring (issue 6)
        await self._relay(conn, resp, ExchangeContext(session, who, meta, set(), []))

    # -- lifecycle ----------------------------------------------------------------
    async def sweep(self) -> None:
        """Enforce the connections' deadlines (idle keep-alive, slow
        requests) a few times per timeout period."""
        cfg = self.config
        interval = min(1.0, max(0.05, min(cfg.request_timeout, cfg.idle_timeout) / 4))
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for conn in [c for c in self.connections if c.deadline <= now]:
                conn.expire()

    async def drain(self, deadline: float) -> None:
        """Stop taking new requests; wait (until ``deadline``, loop time) for
        the exchanges in flight to finish."""
        self.draining = True
        loop = asyncio.get_running_loop()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            conn.stop_accepting()
        if self.inflight:
            self._drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await self._drained.wait()
        for conn in list(self.connections):
            conn.abort()
        if self._background:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await asyncio.gather(*self._background, return_exceptions=True)


# --------------------------------------------------------------------------
# One client connection


class HttpConnection(asyncio.Protocol):
    """The server side of one TCP connection."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.config = proxy.config
        self.parser = mh.RequestParser(self.config.max_header_bytes)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.peer: tuple[Any, ...] | None = None
        self.local: tuple[Any, ...] | None = None
        self.peer_host = "?"
        self.closed = False
        self.last_status = 0
        self.request_started_ns = 0
        self._request: mh.RequestHead | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._handling = False
        # A complete request waiting for the connection's task, and the
        # future that task sleeps on when there is none.
        self._ready: tuple[mh.RequestHead, bytes] | None = None
        self._inbox: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        # One deadline at a time (idle keep-alive, or the request being
        # received), checked by the proxy's periodic sweep: setting two
        # numbers per request is cheaper than a timer per request.
        self.deadline = float("inf")
        self._receiving = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._close_after = False
        self._accepting = True
        self._registered = False
        # The response to the request in hand: 0 not started, 1 streaming,
        # 2 complete.
        self._resp = 2
        self._chunked = True
        self._http10 = False
        self._client_close = False
        self._head_request = False
        # Called when the client goes away mid-exchange (closes the upstream
        # stream: for 2026-07-28 that is the cancellation).
        self.on_lost: Callable[[], None] | None = None

    # -- asyncio.Protocol -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername")
        self.local = transport.get_extra_info("sockname")
        self.peer_host = str(self.peer[0]) if self.peer else "unix"
        proxy = self.proxy
        proxy.metrics.connections_total += 1
        if len(proxy.connections) >= self.config.max_connections or proxy.draining:
            # Over the connection bound: say so and go, without reading.
            proxy.metrics.overloaded += 1
            self._write_reply_raw(
                mh.rpc_error_reply(503, OVERLOADED, "Too many connections; retry later", close=True)
            )
            transport.close()
            self.closed = True
            return
        proxy.connections.add(self)
        proxy.metrics.connections_open += 1
        self._registered = True
        self._task = self.loop.create_task(self._serve())
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if not self._handling and not self._receiving:
            self._arm_request()
        self.parser.feed(data)
        if not self._handling:
            self._process()
        elif self.parser.buffered > self.config.max_body_bytes + self.config.max_header_bytes:
            # The client pipelines faster than we answer: push back.
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self.parser.feed_eof()
        if not self._handling:
            self._process()
            return None
        req = self._request
        if req is not None and req.method == b"GET":
            # A GET stream has no body to finish sending, so the agent's FIN
            # means it has gone.  Release the relay, the upstream stream and
            # the in-flight slot now: an idle stream would otherwise hold
            # them until the upstream ends it, which for a live session is
            # never.
            self.abort()
            return None
        # A POST whose agent half-closed after sending still gets its answer.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._mark_closed()
        if self._registered:
            self._registered = False
            self.proxy.metrics.connections_open -= 1
            self.proxy.connections.discard(self)
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- timers ----------------------------------------------------------------------
    def _cancel_timer(self) -> None:
        self.deadline = float("inf")

    def _arm_idle(self) -> None:
        self._receiving = False
        self.deadline = self.loop.time() + self.config.idle_timeout

    def _arm_request(self) -> None:
        self._receiving = True
        self.deadline = self.loop.time() + self.config.request_timeout

    def expire(self) -> None:
        """The sweep found our deadline passed."""
        self.deadline = float("inf")
        if self._handling or self.closed:
            return
        if not self._receiving:
            self.abort()  # idle keep-alive connection
            return
        reply = mh.rpc_error_reply(
            408,
            INVALID_REQUEST,
            f"request not received completely within {self.config.request_timeout:g}s",
            close=True,
        )
        self._write_reply_raw(reply)
        self.abort()
        self.proxy.spawn(self.proxy.audit_refusal(self.peer_host, reply, "timeout"))

    # -- request intake ---------------------------------------------------------------
    def _process(self) -> None:
        parser = self.parser
        while not self._handling and not self.closed:
            try:
                event = parser.next_event()
            except mh.HttpRequestError as exc:
                self._protocol_error(exc)
                return
            if event is None:
                if not self._receiving and parser.buffered:
                    self._arm_request()  # part of a pipelined request is here
                return
            if type(event) is bytes:
                self._body_size += len(event)
                if self._body_size > self.config.max_body_bytes:
                    self._reject_now(
                        mh.rpc_error_reply(
                            413,
                            INVALID_REQUEST,
                            f"request body exceeds the {self.config.max_body_bytes}-byte limit",
                            close=True,
                        ),
                        "oversize",
                    )
                    return
                self._body.append(event)
            elif isinstance(event, mh.RequestHead):
                self.request_started_ns = time.time_ns()
                self._request = event
                self._body = []
                self._body_size = 0
                if not self._accepting:
                    self._reject_now(
                        mh.rpc_error_reply(503, OVERLOADED, "shutting down", close=True),
                        "shutting_down",
                    )
                    return
                length = event.content_length
                if length is not None and length > self.config.max_body_bytes:
                    self._reject_now(
                        mh.rpc_error_reply(
                            413,
                            INVALID_REQUEST,
                            f"request body of {length} bytes exceeds the "
                            f"{self.config.max_body_bytes}-byte limit",
                            close=True,
                        ),
                        "oversize",
                    )
                    return
                self._resp = 0
                self._http10 = event.http_version == b"1.0"
                self._head_request = event.method == b"HEAD"
                self._client_close = not event.keep_alive
                if event.expect_continue and not parser.buffered:
                    assert self.transport is not None
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            elif event is mh.REQUEST_END:
                self._cancel_timer()
                self._receiving = False
                self._handling = True
                req = self._request
                assert req is not None
                body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
                self._body = []
                self._ready = (req, body)
                inbox = self._inbox
                if inbox is not None and not inbox.done():
                    inbox.set_result(None)
                return
            else:  # CONNECTION_END: the client closed between requests
                self.abort()
                return

    def _protocol_error(self, exc: mh.HttpRequestError) -> None:
        text = str(exc) if exc.status == 431 else f"malformed HTTP request: {exc}"
        self._reject_now(mh.rpc_error_reply(exc.status, INVALID_REQUEST, text, close=True))

    def _reject_now(self, reply: mh.HttpReply, stage: str = "http") -> None:
        """Answer during intake (before the request is complete), close,
        and audit the refusal (in the background: the answer forwards
        nothing, so it need not wait for the entry)."""
        self._write_reply_raw(reply)
        self.abort()
        self.proxy.spawn(self.proxy.audit_refusal(self.peer_host, reply, stage))

    def _write_reply_raw(self, reply: mh.HttpReply) -> None:
        """An answer during intake, outside the request cycle."""
        if self.transport is None or self.transport.is_closing():
            return
        self.last_status = reply.status
        reason = _REASONS.get(reply.status, b"Error")
        head = [b"HTTP/1.1 %d %s\r\n" % (reply.status, reason)]
        if reply.content_type:
            head.append(b"content-type: " + reply.content_type + b"\r\n")
        head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(reply.body))
        self.transport.write(b"".join(head) + reply.body)
        Metrics.bump(self.proxy.metrics.http_requests, ("-", reply.status))

    # -- the per-connection task -----------------------------------------------------------
    async def _serve(self) -> None:
        proxy = self.proxy
        while not self.closed:
            if self._ready is None and not self._handling:
                self._process()  # pipelined bytes already buffered
                if self.is_closed():
                    return  # the agent closed between requests
            if self._ready is None:
                inbox: asyncio.Future[None] = self.loop.create_future()
                self._inbox = inbox
                try:
                    await inbox
                except asyncio.CancelledError:
                    return
                finally:
                    self._inbox = None
            # Re-read through a method: _process() (a callback) sets it
            # behind this frame's back, and a narrowed attribute would be
            # checked as still None by compiled code (agentwall.compiled).
            ready = self._ready_now()
            if ready is None:
                continue
            req, body = ready
            self._ready = None
            if proxy.inflight >= self.config.max_inflight:
                proxy.metrics.overloaded += 1
                self.send_reply(
                    mh.rpc_error_reply(
                        503,
                        OVERLOADED,
                        "AgentWall is at capacity; retry shortly",
                        headers=((b"retry-after", b"1"),),
                    )
                )
            else:
                proxy.inflight += 1
                proxy.busy_poll.begin()
                try:
                    await proxy.handle(self, req, body)
                except Exception as exc:  # the last line of defence: answer, log, keep serving
                    log.exception("internal error while handling %s %s", req.method, req.target)
                    if self._resp == 0:
                        self.send_reply(
                            mh.rpc_error_reply(
                                500, INTERNAL_ERROR, f"internal error: {type(exc).__name__}"
                            )
                        )
                    else:
                        self.abort()
                finally:
                    proxy.exchange_done()
            if not self._finish_cycle():
                return

    def _finish_cycle(self) -> bool:
        if self.closed:
            return False
        if self._resp != 2 or self._close_after:
            self.abort_after_write()
            return False
        # The next request (the parser keeps what the agent already
        # pipelined behind this one).
        self.parser.start()
        self._handling = False
        self._arm_idle()
        assert self.transport is not None
        self.transport.resume_reading()
        return True

    # -- responses ------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def _head(
        self, status: int, headers: Iterable[tuple[bytes, bytes]], close: bool
    ) -> list[bytes]:
        parts = [
            _STATUS_LINES.get(status) or b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))
        ]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if close or self._close_after or not self._accepting or self._client_close:
            self._close_after = True
            parts.append(b"connection: close\r\n")
        return parts

    def send_reply(self, reply: mh.HttpReply) -> None:
        """A whole response in one write.  Header values are ours, or an
        upstream's that the strict response parser already checked."""
        if self.closed or self._resp != 0:
            return
        self._resp = 2
        status = reply.status
        self.last_status = status
        parts = self._head(status, reply.headers, reply.close)
        if reply.content_type is not None:
            parts += (b"content-type: ", reply.content_type, b"\r\n")
        body = reply.body
        if status not in (204, 304):
            parts.append(b"content-length: %d\r\n\r\n" % len(body))
            if body and not self._head_request:
                parts.append(body)
        else:
            parts.append(b"\r\n")
        self._write(b"".join(parts))

    def start_stream(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if self.closed or self._resp != 0:
            return
        self._resp = 1
        self.last_status = status
        # HTTP/1.0 has no chunked coding: the body ends when we close.
        self._chunked = not self._http10
        parts = self._head(status, headers, not self._chunked)
        if self._chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        parts.append(b"\r\n")
        self._write(b"".join(parts))

    def send_chunk(self, data: bytes) -> None:
        if self.closed or self._resp != 1 or not data or self._head_request:
            return
        if self._chunked:
            self._write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self._write(data)

    def end_stream(self) -> None:
        if self.closed or self._resp != 1:
            return
        self._resp = 2
        if self._chunked and not self._head_request:
            self._write(b"0\r\n\r\n")

    async def drain(self) -> None:
        if self._write_paused and not self.closed:
            waiter = self.loop.create_future()
            self._drain_waiter = waiter
            try:
                await waiter
            finally:
                self._drain_waiter = None

    def close_after_response(self) -> None:
        self._close_after = True

    def stop_accepting(self) -> None:
        """Shutdown: finish the request in hand (if any), take no more."""
        self._accepting = False
        if not self._handling and not self._receiving:
            self.abort()

    def abort_after_write(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()  # flushes what is buffered, then closes
        self._mark_closed()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self._mark_closed()

    def _ready_now(self) -> tuple[mh.RequestHead, bytes] | None:
        return self._ready

    def is_closed(self) -> bool:
        # A method, not the attribute: intake callbacks close the connection
        # behind a caller's back, and a re-read must not be narrowed away.
        return self.closed

    def _mark_closed(self) -> None:
        if not self.closed:
            self.closed = True
            self._cancel_timer()
            if self._inbox is not None and not self._inbox.done():
                self._inbox.cancel()


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


_REASONS: dict[int, bytes] = {
    100: b"Continue",
    200: b"OK",
    202: b"Accepted",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    406: b"Not Acceptable",
    408: b"Request Timeout",
    413: b"Content Too Large",
    415: b"Unsupported Media Type",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


_STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in _REASONS.items()
}


async def serve(proxy: Proxy, host: str, port: int, *, sock: Any = None) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    if proxy._sweeper is None:
        proxy._sweeper = loop.create_task(proxy.sweep())
    # Start-up is over: what exists now (modules, the compiled policy, the
    # pools) lives as long as the process, so the cyclic collector need not
    # walk it again; and a call allocates a few hundred objects that
    # reference counting frees, so collecting the young generation every
    # 700 allocations mostly finds nothing.
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, 20, 20)
    if sock is not None:
        return await loop.create_server(lambda: HttpConnection(proxy), sock=sock, backlog=1024)
    return await loop.create_server(
        lambda: HttpConnection(proxy), host, port, backlog=1024, reuse_address=True
    )
