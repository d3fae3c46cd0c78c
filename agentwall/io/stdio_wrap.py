"""``agentwall wrap``: the stdio shell between an agent host and its MCP server.

The host launches us in place of the server; we launch the server.  Every
line in either direction is framed (``core.framing``), parsed strictly
(``core.jsonrpc``), classified (``core.mcp``), judged (``policy.evaluate``,
in-process: one agent's traffic) and, for requests and notifications,
recorded durably in the audit chain *before* the other side sees it.  What
the other side receives is our re-encoding of what was judged.

Responses pass without an entry of their own (the request they answer was
judged and recorded), except that a ``tools/list`` result is filtered to the
tools the policy lets the agent call.  A response whose id no request is
waiting for is dropped: it can only be a confused or hostile peer.

Process plumbing follows the MCP stdio transport: the server runs in its own
process group (so a terminal's Ctrl-C reaches it once, through us) and dies
with us (PR_SET_PDEATHSIG); its stderr is relayed byte for byte (and its tail
kept, to explain a server that fails to start); its environment and working
directory are ours.  When the host closes our stdin the server's stdin is
closed, then SIGTERM, then SIGKILL, each after the grace period, and the
group is swept so nothing is orphaned.  Its exit status becomes ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import itertools
import logging
import os
import secrets
import shlex
import signal
import stat
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from agentwall.audit.record import SERVER_ORIGIN_DETAIL
from agentwall.core.framing import DEFAULT_MAX_LINE, LineTooLong, NdjsonFramer, TruncatedLine
from agentwall.core.jsonrpc import (
    DEFAULT_MAX_DEPTH,
    ErrorResponse,
    Message,
    Notification,
    Request,
    Response,
    encode_message,
    error_response,
    parse,
    sniff_id,
)
from agentwall.core.mcp import make_call
from agentwall.core.present import (
    _scrub_cache,
    apply_redactions,
    denial_data,
    denial_message,
    scrubbed,
)
from agentwall.errors import (
    AUDIT_UNAVAILABLE,
    INVALID_REQUEST,
    POLICY_DENIED,
    RATE_LIMITED,
    UNAUTHENTICATED,
    UPSTREAM_UNAVAILABLE,
    AuditError,
    FrameError,
    IdentityError,
)
from agentwall.types import (
    KILL_MODES,
    PASSING_VERDICTS,
    AuditEvent,
    AuditOutcome,
    Call,
    Decision,
    Identity,
    KillMode,
    Origin,
)

if TYPE_CHECKING:
    from agentwall.cache.ratelimit import PolicyRates, RateLimiter

log = logging.getLogger("agentwall.wrap")

DEFAULT_GRACE_S = 5.0
# Exit status when kill mode ends the session after a denial.
EXIT_SESSION_KILLED = 1
# As a shell reports a command it could not run.
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126

_READ_CHUNK = 1 << 16
_STDERR_TAIL = 8 * 1024
_PR_SET_PDEATHSIG = 1
# Dropped server stdout lines written to our stderr before we only count them.
_DROPPED_LINES_LOGGED = 20


class WrapConfig(msgspec.Struct, frozen=True):
    command: tuple[str, ...]
    kill_mode: KillMode = "none"
    # The agent to SIGKILL in kill modes process/both; None = our parent.
    agent_pid: int | None = None
    dry_run: bool = False
    log_params: bool = False
    max_line: int = DEFAULT_MAX_LINE
    max_depth: int = DEFAULT_MAX_DEPTH
    grace_s: float = DEFAULT_GRACE_S
    filter_tools_list: bool = True


# --- evaluation -------------------------------------------------------------------------


class InProcessEvaluator:
    """``Evaluator`` for one agent: the pure ``policy.evaluate`` in this
    process, behind the same token buckets the pool applies (tools/call from
    the client only; never cached).  ``decide`` is the synchronous core;
    ``evaluate`` is the async protocol method.  Never raises."""

    def __init__(self, policy: Any) -> None:
        # Imported here, not at module level: `agentwall --help` imports this
        # module and should not compile Safe Mode.  Bound once, not per call.
        from agentwall.policy import evaluate

        self._evaluate: Callable[[Any, Call, int], Decision] = evaluate
        self._limiter: RateLimiter | None = None
        self._rates: PolicyRates
        self.policy = policy
        self.set_policy(policy)

    def set_policy(self, policy: Any) -> None:
        # Lazily imported, as above; client: wrap serves one agent, so a
        # Call's client is its session.
        from agentwall.cache.ratelimit import PolicyRates, RateLimiter

        self.policy = policy
        self._rates = PolicyRates(policy)
        if self._rates.any_limit() and self._limiter is None:
            self._limiter = RateLimiter.create(buckets=256)

    def close(self) -> None:
        if self._limiter is not None:
            self._limiter.close()
            self._limiter = None

    async def evaluate(self, call: Call) -> Decision:
        return self.decide(call, time.time_ns())

    def decide(self, call: Call, now_ns: int) -> Decision:
        policy = self.policy
        try:
            if self._limiter is not None:
                refused = self._rates.refusal(self._limiter, call, time.monotonic_ns())
                if refused is not None:
                    return refused.decision(call.call_id, policy.hash)
            return self._evaluate(policy, call, now_ns)
        except Exception as exc:  # noqa: BLE001 -- fail closed: any failure is a deny
            return Decision(
                call_id=call.call_id,
                verdict="deny",
                rule_id="internal.error",
                reason=f"internal error while evaluating ({type(exc).__name__}); denied",
                pointer=None,
                policy_hash=getattr(policy, "hash", ""),
                category="internal",
                cacheable=False,
            )


def _id_in_use(rpc_id: int | str) -> FrameError:
    # Refused and audited like any invalid host message.  The id is not
    # repeated in the text: it would be written into the audit entry.
    return FrameError(
        "request id is already in use by a pending request",
        rpc_code=INVALID_REQUEST,
        rpc_id=rpc_id,
    )


# --- process helpers --------------------------------------------------------------------


def _child_setup() -> None:
    """Runs in the server's process between fork and exec: its own process
    group, and SIGKILL if we die first (no orphan even when we are killed
    with SIGKILL ourselves)."""
    os.setpgid(0, 0)
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def exit_status(returncode: int) -> int:
    """A shell's view of a child's status: 128+N when killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def split_command(text: str) -> list[str]:
    """``--command "npx -y server /tmp"``, split as a POSIX shell would."""
    return shlex.split(text)


class AgentKiller:
    """SIGKILLs the agent (kill modes process/both).  The target is pinned by
    a pidfd taken at start-up, so a recycled pid is never hit."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._pidfd: int | None = None
        if pid > 1:
            with contextlib.suppress(OSError, AttributeError):
                self._pidfd = os.pidfd_open(pid)

    def refusal(self, server_pid: int | None) -> str | None:
        if self.pid <= 1:
            return f"refusing to kill pid {self.pid}"
        if self.pid == os.getpid():
            return "refusing to kill ourselves (--agent-pid is agentwall's own pid)"
        if server_pid is not None and self.pid == server_pid:
            return "refusing to kill the MCP server as the agent"
        return None

    def kill(self, server_pid: int | None) -> tuple[bool, str]:
        refusal = self.refusal(server_pid)
        if refusal is not None:
            return False, refusal
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False, f"agent pid {self.pid} is already gone"
        except OSError as exc:
            return False, f"could not kill agent pid {self.pid}: {exc.strerror or exc}"
        return True, f"sent SIGKILL to agent pid {self.pid}"

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


# --- the wrapper ------------------------------------------------------------------------


class WrapIdentitySource(Protocol):
    """Identity wiring (issue 6): the session's verified identity
    (``agentwall.io.oidc.WrapIdentity``).  ``start`` raises ``IdentityError``
    when the token does not verify; ``__call__`` is synchronous (the data
    path is) and raises ``IdentityError`` once the token stops verifying."""

    async def start(self) -> Identity: ...

    def __call__(self, now_ns: int) -> Identity: ...

    async def aclose(self) -> None: ...


class SyncAudit(Protocol):
    """The in-process audit log (``agentwall.audit.log.AuditLog``): returns
    once the batch is written and fdatasynced; raises ``AuditError``."""

    def append_batch(self, events: Sequence[AuditEvent]) -> list[int]: ...


def _pollable(fd: int) -> bool:
    """Pipes and sockets can join the event loop; a regular file, /dev/null
    or a terminal (an agent launched by hand) is read or written directly."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            time.sleep(0.001)
            continue
        view = view[written:]


class _Out:
    """One line-oriented write side.

    A pipe gets a transport (non-blocking, with flow control), and ``fd``
    too: while the transport holds nothing, a line is written to the fd at
    once, in the callback that decided to send it, rather than at the end
    of the event loop's turn (the other side starts on it sooner, and
    uvloop's buffering is skipped); whatever does not fit goes to the
    transport, which keeps the order and applies back-pressure.  Anything
    else (a file, a terminal) gets blocking writes to ``fd``.
    """

    def __init__(self, transport: asyncio.WriteTransport | None, fd: int = -1) -> None:
        self.transport = transport
        self.fd = fd
        self.broken = False

    def write(self, line: bytes) -> bool:
        if self.broken:
            return False
        transport = self.transport
        data = line + b"\n"
        try:
            if transport is None:
                _write_all(self.fd, data)
                return True
            if transport.is_closing():
                self.broken = True
                return False
            if self.fd >= 0 and not transport.get_write_buffer_size():
                try:
                    written = os.write(self.fd, data)
                except BlockingIOError:
                    written = 0
                if written == len(data):
                    return True
                data = data[written:]
            transport.write(data)
        except (OSError, RuntimeError):
            self.broken = True
            return False
        return True

    def buffered(self) -> int:
        transport = self.transport
        if transport is None or transport.is_closing():
            return 0
        return transport.get_write_buffer_size()

    def close(self) -> None:
        self.broken = True
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.close()


class _HostReader(asyncio.Protocol):
    def __init__(self, wrap: StdioWrap) -> None:
        self.wrap = wrap

    def data_received(self, data: bytes) -> None:
        self.wrap._on_host_data(data)

    def eof_received(self) -> bool:
        self.wrap._on_host_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.wrap._on_host_eof()


class _HostWriter(asyncio.Protocol):
    def __init__(self, wrap: StdioWrap) -> None:
        self.wrap = wrap

    def pause_writing(self) -> None:
        self.wrap._server_reading(False)

    def resume_writing(self) -> None:
        self.wrap._server_reading(True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.wrap._on_host_gone()


class _ServerProtocol(asyncio.SubprocessProtocol):
    """The server process and its stderr; stdin and stdout are wrap's own
    pipes (``_ServerReader``, ``_ServerWriter``)."""

    def __init__(self, wrap: StdioWrap) -> None:
        self.wrap = wrap

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 2:
            self.wrap._on_server_stderr(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 2:
            self.wrap._on_server_pipe_closed(fd)

    def process_exited(self) -> None:
        self.wrap._on_server_exit()


class _ServerReader(asyncio.Protocol):
    """The server's stdout."""

    def __init__(self, wrap: StdioWrap) -> None:
        self.wrap = wrap
        self.closed = False

    def data_received(self, data: bytes) -> None:
        self.wrap._on_server_data(data)

    def eof_received(self) -> bool:
        self._closed()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed()

    def _closed(self) -> None:
        if not self.closed:
            self.closed = True
            self.wrap._on_server_pipe_closed(1)


class _ServerWriter(asyncio.Protocol):
    """The server's stdin.  Flow control: while it is full, stop reading
    the host."""

    def __init__(self, wrap: StdioWrap) -> None:
        self.wrap = wrap

    def pause_writing(self) -> None:
        self.wrap._host_reading(False)

    def resume_writing(self) -> None:
        self.wrap._host_reading(True)


# Precomputed: ``Response | ErrorResponse`` in an isinstance builds a union
# object on every evaluation.
_ANSWERS = (Response, ErrorResponse)
# args_sha256 is core.canonical.sha256_hex of the params; bound once for the
# per-call path.
_sha256 = hashlib.sha256

# Run after the chunk's audit batch, with whether it was made durable.
Action = Callable[[bool], object]
Judged = tuple[Decision, AuditOutcome, Message]


class StdioWrap:
    """One wrapped session.  ``run()`` returns our exit status.

    The data path is synchronous inside the event loop's read callbacks: a
    chunk of input is framed and parsed, every message in it judged, their
    audit entries appended as one durable batch (one fdatasync), and only
    then are the resulting actions (forward, refuse, kill) carried out, in
    input order.  Nothing waits on a task switch between reading a message
    and forwarding it.
    """

    def __init__(
        self,
        config: WrapConfig,
        *,
        policy: Any,
        audit: SyncAudit,
        reload_policy: Callable[[], tuple[Any, dict[str, Any]]] | None = None,
        start_detail: dict[str, Any] | None = None,
        host_in: int = 0,
        host_out: int = 1,
        stderr_fd: int = 2,
        identity: WrapIdentitySource | None = None,
    ) -> None:
        self.config = config
        self._identity = identity
        self.evaluator = InProcessEvaluator(policy)
        self.audit = audit
        self._reload_policy = reload_policy
        self._start_detail = start_detail or {}
        self._host_in_fd = host_in
        self._host_out_fd = host_out
        self._stderr_fd = stderr_fd
        self.session = secrets.token_hex(8)
        self._call_ids = itertools.count(1)
        self._host_framer = NdjsonFramer(config.max_line)
        self._server_framer = NdjsonFramer(config.max_line)
        # Host requests on their way to or at the server: id -> method.
        self._pending: dict[int | str, str] = {}
        # Server requests forwarded to the host: id -> method.
        self._server_pending: dict[int | str, str] = {}
        # The batch being built from one chunk of input.
        self._events: list[AuditEvent] = []
        self._actions: list[Action] = []
        self._server: asyncio.SubprocessTransport | None = None
        self._server_pid: int | None = None
        self._server_in: _Out | None = None
        self._server_out: asyncio.ReadTransport | None = None
        self._host: _Out | None = None
        self._host_in: asyncio.ReadTransport | None = None
        self._host_eof = False
        self._stderr_tail: deque[bytes] = deque()
        self._stderr_tail_size = 0
        self._server_spoke = False
        self._stopping = False
        self._stop_reason = ""
        self._session_killed = False
        self._dropped_server_lines = 0
        self._background: set[asyncio.Future[Any]] = set()
        self._server_exited = asyncio.Event()
        self._server_stdout_closed = asyncio.Event()
        self._server_stderr_closed = asyncio.Event()
        self._mask: Callable[[Any], tuple[Any, tuple[str, ...]]] | None = None
        if config.log_params:
            from agentwall.policy.secrets import params_for_log

            self._mask = params_for_log
        agent_pid = config.agent_pid if config.agent_pid is not None else os.getppid()
        self.killer = AgentKiller(agent_pid) if config.kill_mode in ("process", "both") else None

    # -- entry point -----------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        if self._identity is not None:
            # Identity wiring (issue 6): a token that does not verify stops
            # wrap (IdentityError -> diagnostics) before the server runs.
            await self._identity.start()
        self._record(self._start_event())
        if self.config.dry_run:
            self._record(
                AuditEvent(
                    event="dry_run_active",
                    session=self.session,
                    transport="stdio",
                    reason="--dry-run: denials are logged as dry_run_deny and forwarded",
                )
            )
        # The server's stdin and stdout are plain pipes we create, so that
        # wrap can write to the server's stdin directly (see ``_Out``).  Our
        # ends are close-on-exec; the child's become its fds 0 and 1.
        child_in, server_in = os.pipe2(os.O_CLOEXEC)
        server_out, child_out = os.pipe2(os.O_CLOEXEC)
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: _ServerProtocol(self),
                *self.config.command,
                stdin=child_in,
                stdout=child_out,
                stderr=asyncio.subprocess.PIPE,
                preexec_fn=_child_setup,
            )
        except OSError as exc:
            os.close(server_in)
            os.close(server_out)
            return self._failed_to_spawn(exc)
        finally:
            os.close(child_in)
            os.close(child_out)
        self._server = transport
        self._server_pid = transport.get_pid()
        writer, _ = await loop.connect_write_pipe(
            lambda: _ServerWriter(self), os.fdopen(server_in, "wb", buffering=0)
        )
        self._server_in = _Out(writer, server_in)
        reader, _ = await loop.connect_read_pipe(
            lambda: _ServerReader(self), os.fdopen(server_out, "rb", buffering=0)
        )
        self._server_out = reader
        await self._open_host(loop)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        try:
            await self._server_exited.wait()
            returncode = transport.get_returncode()
            assert returncode is not None
            await self._sweep_group(self._server_pid)
            # The server's last lines (and its stderr) may still be in the pipes.
            await self._wait(self._server_stdout_closed, 2.0)
            await self._wait(self._server_stderr_closed, 1.0)
            self._fail_pending(returncode)
            await self._drain_host()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for task in list(self._background):
                task.cancel()
            for task in list(self._background):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._host_eof = True
            if self._host_in is not None:
                self._host_in.close()
            if self._server_in is not None:
                self._server_in.close()
            self._server_out.close()
            transport.close()
            self.evaluator.close()
            if self._identity is not None:
                await self._identity.aclose()
            if self.killer is not None:
                self.killer.close()
        status = exit_status(returncode)
        if self._failed_to_start(returncode):
            self._explain_failed_start(status)
        if self._session_killed:
            status = EXIT_SESSION_KILLED
        self._record(
            AuditEvent(
                event="proxy_stop",
                session=self.session,
                transport="stdio",
                reason=self._stop_reason or "the MCP server exited",
                detail={
                    "server_exit": returncode,
                    "exit_status": status,
                    "dropped_server_lines": self._dropped_server_lines,
                },
            )
        )
        if self._host is not None:
            self._host.close()
        return status

    async def _open_host(self, loop: asyncio.AbstractEventLoop) -> None:
        if _pollable(self._host_out_fd):
            pipe = os.fdopen(self._host_out_fd, "wb", buffering=0, closefd=False)
            out, _ = await loop.connect_write_pipe(lambda: _HostWriter(self), pipe)
            self._host = _Out(out, self._host_out_fd)
        else:
            self._host = _Out(None, self._host_out_fd)
        if _pollable(self._host_in_fd):
            pipe = os.fdopen(self._host_in_fd, "rb", buffering=0, closefd=False)
            reader, _ = await loop.connect_read_pipe(lambda: _HostReader(self), pipe)
            self._host_in = reader
        else:
            self._spawn(self._read_host_directly())

    async def _read_host_directly(self) -> None:
        """A host stdin that is a file or a terminal: read it in a thread."""
        while not self._host_eof:
            try:
                chunk = await asyncio.to_thread(os.read, self._host_in_fd, _READ_CHUNK)
            except OSError:
                chunk = b""
            if not chunk:
                break
            self._on_host_data(chunk)
        self._on_host_eof()

    def _start_event(self) -> AuditEvent:
        detail: dict[str, Any] = {
            "command": list(self.config.command),
            "pid": os.getpid(),
            "kill_mode": self.config.kill_mode,
            "dry_run": self.config.dry_run,
            "max_line": self.config.max_line,
            **self._start_detail,
        }
        return AuditEvent(
            event="proxy_start",
            session=self.session,
            transport="stdio",
            policy_hash=self.evaluator.policy.hash,
            detail=detail,
        )

    def _failed_to_spawn(self, exc: OSError) -> int:
        command = shlex.join(self.config.command)
        status = EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_NOT_EXECUTABLE
        message = f"cannot start the MCP server `{command}`: {exc.strerror or exc}"
        self._stderr(f"agentwall wrap: error: {message}\n".encode())
        self._record(
            AuditEvent(event="error", session=self.session, transport="stdio", reason=message)
        )
        self._record(
            AuditEvent(
                event="proxy_stop",
                session=self.session,
                transport="stdio",
                reason="the MCP server could not be started",
                detail={"exit_status": status},
            )
        )
        return status

    def _failed_to_start(self, returncode: int) -> bool:
        return returncode != 0 and not self._server_spoke and not self._stopping

    def _explain_failed_start(self, status: int) -> None:
        command = shlex.join(self.config.command)
        tail = b"".join(self._stderr_tail).decode("utf-8", "replace").rstrip()
        text = (
            f"agentwall wrap: error: the MCP server `{command}` exited with status {status} "
            "before sending any message"
        )
        text += f"; its stderr ended with:\n{tail}\n" if tail else " (it wrote nothing to stderr)\n"
        self._stderr(text.encode())

    # -- the batch: audit first, then act ------------------------------------------------

    def _commit(self) -> None:
        """Make this chunk's entries durable, then carry out its actions in
        order.  If the entries cannot be made durable, every action is told
        so (and refuses instead of forwarding)."""
        while self._actions:
            events, actions = self._events, self._actions
            self._events, self._actions = [], []
            durable = True
            if events:
                try:
                    self.audit.append_batch(events)
                except AuditError as exc:
                    durable = False
                    self._note(f"{len(events)} audit entries could not be made durable: {exc}")
            for action in actions:
                action(durable)

    def _then(self, action: Action, event: AuditEvent | None = None) -> None:
        if event is not None:
            self._events.append(event)
        self._actions.append(action)

    def _record(self, event: AuditEvent) -> bool:
        """One entry outside the data path (start, stop, reload, kills)."""
        try:
            self.audit.append_batch((event,))
        except AuditError as exc:
            self._note(f"audit entry ({event.event}) could not be written: {exc}")
            return False
        return True

    # -- host -> server ---------------------------------------------------------------

    def _on_host_data(self, data: bytes) -> None:
        if self._host_eof or self._session_killed:
            return
        for item in self._host_framer.feed(data):
            self._from_host(item)
        self._commit()

    def _on_host_eof(self) -> None:
        if self._host_eof:
            return
        if not self._session_killed:
            for item in self._host_framer.eof():
                self._from_host(item)
            self._commit()
        self._host_eof = True
        self._begin_shutdown("the host closed its end (stdin EOF)", graceful=True)

    def _on_host_gone(self) -> None:
        self._begin_shutdown("the host stopped reading (stdout closed)", graceful=True)

    def _host_reading(self, on: bool) -> None:
        reader = self._host_in
        if reader is not None and not reader.is_closing():
            with contextlib.suppress(Exception):
                reader.resume_reading() if on else reader.pause_reading()

    def _from_host(self, item: bytes | LineTooLong | TruncatedLine) -> None:
        if type(item) is bytes:  # a whole line: nearly always
            data = item
            partial = False
        elif isinstance(item, LineTooLong):
            self._host_frame_error(
                FrameError(
                    f"message line longer than {item.limit} bytes; discarded",
                    rpc_code=INVALID_REQUEST,
                    rpc_id=sniff_id(item.head),
                )
            )
            return
        else:
            assert isinstance(item, TruncatedLine)
            data = item.data
            partial = True
        received_ns = time.time_ns()
        try:
            parsed = parse(data, max_size=self.config.max_line, max_depth=self.config.max_depth)
        except FrameError as exc:
            if partial:
                exc = FrameError(
                    f"input ended in the middle of a message ({exc})",
                    rpc_code=exc.rpc_code,
                    rpc_id=exc.rpc_id,
                )
            self._host_frame_error(exc)
            return
        message = parsed.message
        if isinstance(message, list):
            self._host_batch(message, received_ns)
            return
        self._host_message(message, parsed.wire, received_ns)

    def _host_message(self, message: Message, wire: bytes, received_ns: int) -> None:
        if isinstance(message, _ANSWERS):
            if message.id is None or self._server_pending.pop(message.id, None) is None:
                self._note(f"dropped a response from the host for unknown id {message.id!r}")
                return
            if not self._actions and not self._events:
                self._to_server(wire)  # as for responses from the server
            else:
                self._then(lambda _durable: self._to_server(wire))
            return
        if isinstance(message, Request) and message.id in self._pending:
            self._host_frame_error(_id_in_use(message.id))
            return
        judged = self._judge(message, "client", received_ns)
        if judged is None:
            return
        decision, outcome, forward = judged
        passes = outcome not in ("deny", "error")
        if passes and isinstance(forward, Request):
            self._pending[forward.id] = forward.method
        if forward is not message:
            wire = encode_message(forward)

        def act(durable: bool) -> None:
            if not durable:
                self._refuse_host(message, decision, "error")
            elif not passes:
                self._refuse_host(message, decision, outcome)
                if outcome == "deny":
                    self._enforce_kill(decision)
            else:
                self._forward_host_message(forward, wire)

        self._actions.append(act)

    def _host_batch(self, batch: list[Message | FrameError], received_ns: int) -> None:
        """Items are judged one by one; refusals are answered one by one; what
        passes goes to the server as one batch."""
        forward: list[Message | FrameError] = []
        for item in batch:
            if isinstance(item, FrameError):
                self._host_frame_error(item)
                continue
            if isinstance(item, _ANSWERS):
                if item.id is not None and self._server_pending.pop(item.id, None) is not None:
                    forward.append(item)
                else:
                    self._note(f"dropped a response from the host for unknown id {item.id!r}")
                continue
            if isinstance(item, Request) and item.id in self._pending:
                self._host_frame_error(_id_in_use(item.id))
                continue
            judged = self._judge(item, "client", received_ns)
            if judged is None:
                continue
            decision, outcome, passed = judged
            if outcome in ("deny", "error"):

                def refuse(
                    durable: bool, m: Message = item, d: Decision = decision, o: str = outcome
                ) -> None:
                    self._refuse_host(m, d, o if durable else "error")
                    if durable and o == "deny":
                        self._enforce_kill(d)

                self._actions.append(refuse)
                continue
            if isinstance(passed, Request):
                self._pending[passed.id] = passed.method
            forward.append(passed)
        if not forward:
            return
        wire = encode_message(forward)

        def send(durable: bool) -> None:
            if not durable:
                for m in forward:
                    if isinstance(m, Request):
                        self._pending.pop(m.id, None)
                        self._to_host(
                            error_response(m.id, AUDIT_UNAVAILABLE, "the audit log is unavailable")
                        )
                return
            if not self._to_server(wire):
                for m in forward:
                    if isinstance(m, Request):
                        self._server_unreachable(m.id)

        self._actions.append(send)

    def _forward_host_message(self, message: Message, wire: bytes) -> None:
        if self._session_killed:
            # Kill mode ended the session earlier in this same chunk.
            if isinstance(message, Request):
                self._pending.pop(message.id, None)
                self._to_host(
                    error_response(message.id, POLICY_DENIED, "the session was ended by kill mode")
                )
            return
        if isinstance(message, Notification) and message.method == "notifications/cancelled":
            # The server may never answer a cancelled request; nor must we.
            params = message.params
            if isinstance(params, dict):
                cancelled = params.get("requestId")
                if isinstance(cancelled, int | str) and not isinstance(cancelled, bool):
                    self._pending.pop(cancelled, None)
        out = self._server_in  # _to_server, inlined on the per-call path
        if (out is None or not out.write(wire)) and isinstance(message, Request):
            self._server_unreachable(message.id)

    def _refuse_host(self, message: Message, decision: Decision, outcome: str) -> None:
        if isinstance(message, Request):
            self._pending.pop(message.id, None)
            self._to_host(self._refusal(message.id, decision, outcome))

    def _refusal(self, rpc_id: int | str, decision: Decision, outcome: str) -> bytes:
        if outcome == "error":
            return error_response(
                rpc_id,
                AUDIT_UNAVAILABLE,
                "Refused: the audit log is unavailable; nothing was forwarded",
                {"decision_id": decision.call_id},
            )
        if decision.category == "rate_limit":
            return error_response(
                rpc_id,
                RATE_LIMITED,
                f"Rate limit exceeded ({decision.rule_id}); "
                f"retry after {decision.retry_after_ms} ms",
                denial_data(decision),
            )
        message = denial_message(decision)
        if decision.category == "identity_invalid":
            return error_response(rpc_id, UNAUTHENTICATED, message, denial_data(decision))
        return error_response(rpc_id, POLICY_DENIED, message, denial_data(decision))

    def _host_frame_error(self, exc: FrameError) -> None:
        event = AuditEvent(
            event="error",
            session=self.session,
            transport="stdio",
            rpc_id=scrubbed(exc.rpc_id),
            reason=f"invalid message from the host: {exc}",
            detail={"direction": "host", "code": exc.rpc_code},
        )
        reply = error_response(exc.rpc_id, exc.rpc_code, str(exc))
        # The error is answered even when its entry cannot be written: it
        # forwards nothing.
        self._then(lambda _durable: self._to_host(reply), event)

    def _server_unreachable(self, rpc_id: int | str) -> None:
        if self._pending.pop(rpc_id, None) is not None:
            # Its decision entry says it was allowed; this one says it never
            # reached the server, so the log does not overstate what ran.
            self._record(
                AuditEvent(
                    event="error",
                    session=self.session,
                    transport="stdio",
                    rpc_id=scrubbed(rpc_id),
                    reason="request not delivered: the MCP server closed its input",
                    detail={"undelivered": True},
                )
            )
            self._to_host(
                error_response(
                    rpc_id,
                    UPSTREAM_UNAVAILABLE,
                    "the MCP server closed its input (it stopped or exited); "
                    "the request was not delivered",
                )
            )

    def _to_server(self, wire: bytes) -> bool:
        out = self._server_in
        return out is not None and out.write(wire)

    # -- server -> host ---------------------------------------------------------------

    def _on_server_data(self, data: bytes) -> None:
        for item in self._server_framer.feed(data):
            self._from_server(item)
        self._commit()

    def _on_server_pipe_closed(self, fd: int) -> None:
        if fd == 1:
            for item in self._server_framer.eof():
                self._from_server(item)
            self._commit()
            self._server_stdout_closed.set()
        elif fd == 2:
            self._server_stderr_closed.set()

    def _on_server_exit(self) -> None:
        self._server_exited.set()

    def _server_reading(self, on: bool) -> None:
        reader = self._server_out
        if reader is not None and not reader.is_closing():
            with contextlib.suppress(Exception):
                reader.resume_reading() if on else reader.pause_reading()

    def _from_server(self, item: bytes | LineTooLong | TruncatedLine) -> None:
        if type(item) is bytes:  # a whole line: nearly always
            data = item
        elif isinstance(item, LineTooLong):
            self._dropped_server_output(
                f"a line longer than {item.limit} bytes", sniff_id(item.head), item.head
            )
            return
        else:
            assert isinstance(item, TruncatedLine)
            data = item.data
        received_ns = time.time_ns()
        try:
            parsed = parse(data, max_size=self.config.max_line, max_depth=self.config.max_depth)
        except FrameError as exc:
            self._dropped_server_output(str(exc), exc.rpc_id, data)
            return
        self._server_spoke = True
        message = parsed.message
        if isinstance(message, _ANSWERS) and not self._actions and not self._events:
            # The common case, inlined: the answer to a pending host request
            # (no entry of its own: the request's entry is already durable),
            # with nothing earlier in this chunk waiting for an audit batch.
            # Exactly what _server_message does for it; tools/list results
            # (filtered) and anything unexpected go the general way.
            rpc_id = message.id
            if rpc_id is not None:
                method = self._pending.get(rpc_id)
                if method is not None and method != "tools/list":
                    del self._pending[rpc_id]
                    self._to_host(parsed.wire)
                    return
        if not isinstance(message, list):
            self._server_message(message, parsed.wire, received_ns)
            return
        forward: list[Message | FrameError] = []
        for entry in message:
            if isinstance(entry, FrameError):
                self._dropped_server_output(str(entry), entry.rpc_id)
                continue
            passed = self._judge_server_message(entry, received_ns)
            if passed is not None:
                forward.append(passed)
        if forward:
            wire = encode_message(forward)
            self._then(lambda durable: self._to_host(wire) if durable else None)

    def _server_message(self, message: Message, wire: bytes, received_ns: int) -> None:
        passed = self._judge_server_message(message, received_ns)
        if passed is None:
            return
        if passed is not message:
            wire = encode_message(passed)
        if not self._actions and not self._events:
            # A response (no entry of its own: its request's entry is already
            # durable) with nothing earlier in this chunk waiting for an audit
            # batch: deliver it now rather than through the queue.
            self._to_host(wire)
            return
        self._then(lambda durable: self._to_host(wire) if durable else None)

    def _judge_server_message(self, message: Message, received_ns: int) -> Message | None:
        """What to forward to the host (None: answered or dropped here).  A
        refused server request is answered to the server in the host's
        place, so it does not wait forever."""
        if isinstance(message, _ANSWERS):
            if message.id is None:
                self._note(f"the MCP server reported an error without an id: {message.error}")
                return None
            method = self._pending.pop(message.id, None)
            if method is None:
                self._note(f"dropped a response from the MCP server for unknown id {message.id!r}")
                return None
            if (
                method == "tools/list"
                and self.config.filter_tools_list
                and isinstance(message, Response)
            ):
                from agentwall.policy import filter_tools_list

                result = filter_tools_list(self.evaluator.policy, message.result, None)
                return msgspec.structs.replace(message, result=result)
            return message
        judged = self._judge(message, "server", received_ns)
        if judged is None:
            return None
        decision, outcome, forward = judged
        if outcome in ("deny", "error"):
            if isinstance(message, Request):
                reply = self._refusal(message.id, decision, outcome)
                self._then(lambda _durable: self._to_server_quietly(reply))
            return None
        if isinstance(forward, Request):
            self._server_pending[forward.id] = forward.method

            def forget_if_lost(durable: bool, rpc_id: int | str = forward.id) -> None:
                if not durable:
                    self._server_pending.pop(rpc_id, None)
                    self._to_server_quietly(
                        error_response(rpc_id, AUDIT_UNAVAILABLE, "the audit log is unavailable")
                    )

            self._actions.append(forget_if_lost)
        return forward

    def _to_server_quietly(self, wire: bytes) -> None:
        self._to_server(wire)

    def _dropped_server_output(
        self, why: str, rpc_id: int | str | None, data: bytes | None = None
    ) -> None:
        """Anything on the server's stdout that is not a valid message never
        reaches the host (the spec forbids it there).  A pending request it
        names is answered with an error so the host does not wait forever."""
        self._dropped_server_lines += 1
        count = self._dropped_server_lines
        if count <= _DROPPED_LINES_LOGGED or count % 1000 == 0:
            sample = "" if data is None else f": {data[:120]!r}"
            self._note(f"dropped invalid output #{count} from the MCP server ({why}){sample}")
        event = None
        if count == 1:
            event = AuditEvent(
                event="error",
                session=self.session,
                transport="stdio",
                reason=f"invalid output from the MCP server dropped: {why}",
                detail={"direction": "server", "note": "later drops are counted at stop"},
            )
        reply = None
        if rpc_id is not None and self._pending.pop(rpc_id, None) is not None:
            reply = error_response(
                rpc_id, UPSTREAM_UNAVAILABLE, f"the MCP server sent an invalid answer: {why}"
            )
        if event is not None or reply is not None:
            self._then(lambda _durable: reply is not None and self._to_host(reply), event)

    def _on_server_stderr(self, chunk: bytes) -> None:
        self._stderr(chunk)
        self._stderr_tail.append(chunk)
        self._stderr_tail_size += len(chunk)
        while self._stderr_tail_size - len(self._stderr_tail[0]) >= _STDERR_TAIL:
            self._stderr_tail_size -= len(self._stderr_tail.popleft())

    # -- judging ------------------------------------------------------------------------

    def _judge(
        self, message: Request | Notification, origin: Origin, received_ns: int
    ) -> Judged | None:
        """Evaluate and queue the decision's audit entry.  Returns (decision,
        outcome, what to forward); None when the message was malformed (its
        refusal is queued)."""
        call_id = f"{self.session}-{next(self._call_ids)}"
        identity: Identity | None = None
        identity_error: IdentityError | None = None
        if self._identity is not None:
            try:
                identity = self._identity(received_ns)
            except IdentityError as exc:
                identity_error = exc
        try:
            call = make_call(
                message,
                session=self.session,
                transport="stdio",
                origin=origin,
                call_id=call_id,
                identity=identity,
                now_ns=received_ns,
            )
        except FrameError as exc:
            self._malformed(message, origin, call_id, exc)
            return None
        if identity_error is not None:
            # The session's token stopped verifying (expired, key removed):
            # fail closed, audited like any denial.
            decision = Decision(
                call_id=call_id,
                verdict="deny",
                rule_id="identity.token",
                reason=f"the session's identity token does not verify: {identity_error}",
                pointer=None,
                policy_hash=self.evaluator.policy.hash,
                category="identity_invalid",
                cacheable=False,
            )
        else:
            decision = self.evaluator.decide(call, received_ns)
        verdict = decision.verdict
        outcome: AuditOutcome
        if verdict in PASSING_VERDICTS:
            outcome = verdict
        elif self.config.dry_run:
            outcome = "dry_run_deny"
        else:
            outcome = "deny"
        self._events.append(self._decision_event(call, decision, outcome, received_ns))
        forward: Message = message
        if verdict == "redact" and decision.redactions and message.params is not msgspec.UNSET:
            params = apply_redactions(message.params, decision.redactions)
            forward = msgspec.structs.replace(message, params=params)
        return decision, outcome, forward

    def _malformed(
        self, message: Request | Notification, origin: Origin, call_id: str, exc: FrameError
    ) -> None:
        rpc_id = message.id if isinstance(message, Request) else None
        event = AuditEvent(
            event="decision",
            session=self.session,
            transport="stdio",
            call_id=call_id,
            rpc_id=scrubbed(rpc_id),
            method=scrubbed(message.method),
            decision="deny",
            rule_id="request.malformed",
            reason=str(exc),
            category="malformed",
            detail={"origin": origin},
        )
        reply = None if rpc_id is None else error_response(rpc_id, exc.rpc_code, str(exc))

        def answer(_durable: bool) -> None:
            if reply is None:
                return
            if origin == "client":
                self._to_host(reply)
            else:
                self._to_server_quietly(reply)

        self._then(answer, event)

    def _decision_event(
        self, call: Call, decision: Decision, outcome: AuditOutcome, received_ns: int
    ) -> AuditEvent:
        # msgspec matches at most 15 keyword arguments, given in field order,
        # by its fast path (0.4 us here); 16, or one out of order, take a
        # slower one (1.4-1.8 us).  So: 15 in order, and the rarer members
        # (server origin, identity, logged params) by replace().
        # scrubbed(), with its cache hit inlined for the method and tool
        # names every entry carries (an int id needs no masking).
        rpc_id = call.rpc_id
        if type(rpc_id) is str:
            rpc_id = scrubbed(rpc_id)
        method = _scrub_cache.get(call.method)
        if method is None:
            method = scrubbed(call.method)
        target = _scrub_cache.get(call.target)
        if target is None:
            target = scrubbed(call.target)
        event = AuditEvent(
            event="decision",
            session=call.session,
            transport="stdio",
            call_id=call.call_id,
            rpc_id=rpc_id,
            method=method,
            target=target or None,
            decision=outcome,
            rule_id=decision.rule_id,
            reason=decision.reason,
            pointer=decision.pointer,
            args_sha256=_sha256(call.params_json).hexdigest(),
            latency_us=(time.time_ns() - received_ns) // 1000,
            policy_hash=decision.policy_hash,
            category=decision.category,
        )
        if call.origin != "client":
            event = msgspec.structs.replace(event, detail=SERVER_ORIGIN_DETAIL)
        identity = call.identity
        if identity is not None:
            event = msgspec.structs.replace(event, subject=identity.subject, issuer=identity.issuer)
        if self._mask is not None:
            params, masked = self._mask(call.params)
            event = msgspec.structs.replace(event, params=params, masked=masked)
        return event

    # -- kill modes ---------------------------------------------------------------------

    def _enforce_kill(self, decision: Decision) -> None:
        mode = self.config.kill_mode
        if mode == "none" or self.config.dry_run:
            return
        if mode in ("process", "both") and self.killer is not None:
            ok, detail = self.killer.kill(self._server_pid)
            self._note(f"kill-mode {mode}: {detail}")
            self._record(
                AuditEvent(
                    event="error",
                    session=self.session,
                    transport="stdio",
                    call_id=decision.call_id,
                    reason=detail,
                    detail={"action": "kill", "kill_mode": mode, "ok": ok, "pid": self.killer.pid},
                )
            )
        if mode in ("connection", "both"):
            self._session_killed = True
            self._host_reading(False)
            self._begin_shutdown(
                f"kill-mode {mode}: session ended after denial {decision.call_id}", graceful=False
            )

    # -- shutdown -----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        self._note(f"received {name}; forwarding it to the MCP server")
        self._signal_group(sig)
        self._begin_shutdown(f"received {name}", graceful=True, close_stdin=False)

    def _on_sighup(self) -> None:
        self._spawn(self._reload())

    async def _reload(self) -> None:
        if self._reload_policy is None:
            return
        old = self.evaluator.policy.hash
        try:
            policy, detail = await asyncio.to_thread(self._reload_policy)
        except Exception as exc:  # noqa: BLE001 -- reported; the running policy stays
            diagnostics = getattr(exc, "diagnostics", None)
            reason = diagnostics() if callable(diagnostics) else str(exc)
            self._note(f"policy reload failed, keeping {old[:12]}: {reason}")
            self._record(
                AuditEvent(
                    event="policy_reload_failed",
                    session=self.session,
                    transport="stdio",
                    policy_hash=old,
                    reason=reason,
                )
            )
            return
        self.evaluator.set_policy(policy)
        self._note(f"policy reloaded: {old[:12]} -> {policy.hash[:12]}")
        self._record(
            AuditEvent(
                event="policy_loaded",
                session=self.session,
                transport="stdio",
                policy_hash=policy.hash,
                detail={"previous": old, **detail},
            )
        )

    def _begin_shutdown(self, reason: str, *, graceful: bool, close_stdin: bool = True) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._stop_reason = reason
        self._spawn(self._stop_server(graceful, close_stdin))

    async def _stop_server(self, graceful: bool, close_stdin: bool) -> None:
        """MCP stdio shutdown: close the server's stdin, wait; SIGTERM, wait;
        SIGKILL.  Forwarded signals skip the first step (the server already
        has the signal); kill mode connection skips the first wait."""
        grace = self.config.grace_s
        if close_stdin and self._server_in is not None:
            # close() lets what is buffered reach the server first.
            self._server_in.close()
        if graceful and await self._wait(self._server_exited, grace):
            return
        self._signal_group(signal.SIGTERM)
        if await self._wait(self._server_exited, grace):
            return
        self._note(f"the MCP server did not exit {grace:g}s after SIGTERM; sending SIGKILL")
        self._signal_group(signal.SIGKILL)

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            return False
        return True

    def _signal_group(self, sig: int) -> None:
        pid = self._server_pid
        if pid is None or self._server_exited.is_set():
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    async def _sweep_group(self, pgid: int | None) -> None:
        """The server has exited; anything it left in its process group
        would be an orphan: SIGTERM it, then SIGKILL what remains."""
        if pgid is None:
            return
        for sig, pause in ((signal.SIGTERM, min(self.config.grace_s, 1.0)), (signal.SIGKILL, 0.0)):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                return
            self._note(f"the MCP server left processes behind; sent {signal.Signals(sig).name}")
            deadline = time.monotonic() + pause
            while time.monotonic() < deadline:
                await asyncio.sleep(0.02)
                try:
                    os.killpg(pgid, 0)
                except (ProcessLookupError, PermissionError):
                    return

    def _fail_pending(self, returncode: int) -> None:
        """Every host request still waiting gets an error: the server will
        never answer it."""
        if not self._pending:
            return
        status = exit_status(returncode)
        why = (
            "the MCP server was stopped"
            if self._stopping
            else f"the MCP server exited (status {status})"
        )
        pending = list(self._pending)
        self._pending.clear()
        self._record(
            AuditEvent(
                event="error",
                session=self.session,
                transport="stdio",
                reason=f"{why} with {len(pending)} request(s) unanswered",
                detail={"pending": pending[:100], "server_exit": returncode},
            )
        )
        for rpc_id in pending:
            self._to_host(error_response(rpc_id, UPSTREAM_UNAVAILABLE, f"{why} before answering"))

    async def _drain_host(self) -> None:
        """Let what we queued for the host reach it (bounded)."""
        host = self._host
        deadline = time.monotonic() + 5.0
        while host is not None and host.buffered() and time.monotonic() < deadline:  # noqa: ASYNC110 -- a transport exposes a size, not an event
            await asyncio.sleep(0.01)

    # -- output helpers ------------------------------------------------------------------

    def _to_host(self, line: bytes) -> bool:
        host = self._host
        if host is None or not host.write(line):
            self._on_host_gone()
            return False
        return True

    def _note(self, text: str) -> None:
        self._stderr(f"agentwall wrap: {text}\n".encode("utf-8", "replace"))

    def _stderr(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            _write_all(self._stderr_fd, data)


def run_wrap(make: Callable[[], StdioWrap]) -> int:
    """Runs one session on uvloop (asyncio when uvloop is missing)."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        factory = None

    async def main() -> int:
        return await make().run()

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


__all__: Sequence[str] = (
    "KILL_MODES",
    "AgentKiller",
    "InProcessEvaluator",
    "StdioWrap",
    "SyncAudit",
    "WrapConfig",
    "apply_redactions",
    "denial_data",
    "denial_message",
    "exit_status",
    "run_wrap",
    "scrubbed",
    "split_command",
)
