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
import itertools
import logging
import os
import secrets
import shlex
import signal
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import msgspec

from agentwall.core.canonical import sha256_hex
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
from agentwall.errors import (
    AUDIT_UNAVAILABLE,
    INVALID_REQUEST,
    POLICY_DENIED,
    RATE_LIMITED,
    UPSTREAM_UNAVAILABLE,
    AuditError,
    FrameError,
)
from agentwall.io.contracts import AuditSink
from agentwall.types import (
    PASSING_VERDICTS,
    AuditEvent,
    AuditOutcome,
    Call,
    Decision,
    Origin,
)

log = logging.getLogger("agentwall.wrap")

KillMode = Literal["none", "connection", "process", "both"]
KILL_MODES: tuple[KillMode, ...] = ("none", "connection", "process", "both")

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
        self._limiter: Any = None
        self._session_rate: Any = None
        self._tool_rates: dict[str, Any] = {}
        self.policy = policy
        self.set_policy(policy)

    def set_policy(self, policy: Any) -> None:
        from agentwall.cache.ratelimit import RateLimiter, RateSpec, as_spec

        self.policy = policy
        rate = policy.session_rate
        burst = policy.session_burst
        self._session_rate = as_spec(
            None if rate is None else RateSpec(float(rate), None if burst is None else float(burst))
        )
        self._tool_rates = {
            t.name: as_spec(policy.tool_rate_limit(t.name))
            for t in policy.tools
            if policy.tool_rate_limit(t.name) is not None
        }
        if (self._session_rate is not None or self._tool_rates) and self._limiter is None:
            self._limiter = RateLimiter.create(buckets=256)

    def close(self) -> None:
        if self._limiter is not None:
            self._limiter.close()
            self._limiter = None

    async def evaluate(self, call: Call) -> Decision:
        return self.decide(call, time.time_ns())

    def decide(self, call: Call, now_ns: int) -> Decision:
        from agentwall.policy import evaluate

        policy = self.policy
        try:
            if (
                self._limiter is not None
                and call.method == "tools/call"
                and call.kind == "request"
                and call.origin == "client"
            ):
                tool_rate = self._tool_rates.get(call.target)
                if self._session_rate is not None or tool_rate is not None:
                    verdict = self._limiter.check(
                        call.session, call.target, self._session_rate, tool_rate,
                        time.monotonic_ns(),
                    )  # fmt: skip
                    if not verdict.allowed:
                        retry_ms = max(1, int(verdict.retry_after_s * 1000 + 0.999))
                        scope = verdict.scope or "session"
                        return Decision(
                            call_id=call.call_id,
                            verdict="deny",
                            rule_id=f"rate_limit.{scope}",
                            reason=f"{scope} rate limit of {verdict.limit:g} calls/s exceeded; "
                            f"retry after {retry_ms} ms",
                            pointer=None,
                            policy_hash=policy.hash,
                            category="rate_limit",
                            cacheable=False,
                            retry_after_ms=retry_ms,
                        )
            decision: Decision = evaluate(policy, call, now_ns)
            return decision
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


def denial_message(decision: Decision) -> str:
    rule = decision.rule_id or "default_action"
    return f"Denied by policy rule {rule}: {decision.reason}"


def denial_data(decision: Decision) -> dict[str, Any]:
    data: dict[str, Any] = {
        "decision_id": decision.call_id,
        "rule": decision.rule_id,
        "pointer": decision.pointer,
        "reason": decision.reason,
    }
    if decision.category:
        data["category"] = decision.category
    if decision.retry_after_ms is not None:
        data["retry_after_ms"] = decision.retry_after_ms
    return data


def apply_redactions(params: Any, pointers: Iterable[str]) -> Any:
    """Copy of ``params`` with the value at each RFC 6901 pointer replaced."""
    out = msgspec.json.decode(msgspec.json.encode(params))
    for ptr in pointers:
        if not ptr.startswith("/"):
            continue
        parts = [p.replace("~1", "/").replace("~0", "~") for p in ptr[1:].split("/")]
        node = out
        for part in parts[:-1]:
            if isinstance(node, dict):
                node = node.get(part)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = None
                break
        last = parts[-1]
        if isinstance(node, dict) and last in node:
            node[last] = "[REDACTED]"
        elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = "[REDACTED]"
    return out


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


def _pollable(fd: int) -> bool:
    """Pipes and sockets can join the event loop; a regular file, /dev/null
    or a terminal (an agent launched by hand) is read or written directly."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class _Pipe:
    """A write side (our stdout or the server's stdin).  ``writer`` None means
    a blocking fd written directly (not a pipe)."""

    def __init__(self, writer: asyncio.StreamWriter | None, fd: int = -1) -> None:
        self.writer = writer
        self.fd = fd
        self.broken = False

    async def send(self, line: bytes) -> bool:
        if self.broken:
            return False
        try:
            if self.writer is None:
                _write_all(self.fd, line + b"\n")
                return True
            self.writer.write(line + b"\n")
            if self.writer.transport.get_write_buffer_size() > _READ_CHUNK:
                await self.writer.drain()
        except (ConnectionError, RuntimeError, OSError):
            self.broken = True
            return False
        return True

    async def flush(self) -> None:
        if self.broken or self.writer is None:
            return
        try:
            await self.writer.drain()
        except (ConnectionError, RuntimeError, OSError):
            self.broken = True

    def close(self) -> None:
        if not self.broken:
            self.broken = True
            if self.writer is not None:
                with contextlib.suppress(Exception):
                    self.writer.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            time.sleep(0.001)
            continue
        view = view[written:]


class StdioWrap:
    """One wrapped session.  ``run()`` returns our exit status."""

    def __init__(
        self,
        config: WrapConfig,
        *,
        policy: Any,
        audit: AuditSink,
        reload_policy: Callable[[], tuple[Any, dict[str, Any]]] | None = None,
        start_detail: dict[str, Any] | None = None,
        host_in: int = 0,
        host_out: int = 1,
        stderr_fd: int = 2,
    ) -> None:
        self.config = config
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
        # Host requests forwarded to the server: id -> method.
        self._pending: dict[int | str, str] = {}
        # Server requests forwarded to the host: id -> method.
        self._server_pending: dict[int | str, str] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._host: _Pipe | None = None
        self._server_in: _Pipe | None = None
        self._stderr_tail: deque[bytes] = deque()
        self._stderr_tail_size = 0
        self._server_spoke = False
        self._stopping = False
        self._stop_reason = ""
        self._signalled: int | None = None
        self._session_killed = False
        self._dropped_server_lines = 0
        self._shutdown_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[None]] = set()
        self._server_exited = asyncio.Event()
        self._mask: Callable[[Any], tuple[Any, tuple[str, ...]]] | None = None
        if config.log_params:
            from agentwall.policy.secrets import mask_secrets

            self._mask = mask_secrets
        agent_pid = config.agent_pid if config.agent_pid is not None else os.getppid()
        self.killer = AgentKiller(agent_pid) if config.kill_mode in ("process", "both") else None

    # -- entry point -----------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        await self._record(self._start_event())
        if self.config.dry_run:
            await self._record(
                AuditEvent(
                    event="dry_run_active",
                    session=self.session,
                    transport="stdio",
                    reason="--dry-run: denials are logged as dry_run_deny and forwarded",
                )
            )
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.config.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                preexec_fn=_child_setup,
            )
        except OSError as exc:
            return await self._failed_to_spawn(exc)
        proc = self._proc
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        self._server_in = _Pipe(proc.stdin)
        if _pollable(self._host_out_fd):
            self._host = _Pipe(await self._open_host_writer(loop))
        else:
            self._host = _Pipe(None, self._host_out_fd)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        waiter = asyncio.ensure_future(proc.wait())
        waiter.add_done_callback(lambda _f: self._server_exited.set())
        stderr_task = asyncio.ensure_future(self._relay_stderr(proc.stderr))
        server_task = asyncio.ensure_future(self._server_pump(proc.stdout))
        host_task = asyncio.ensure_future(self._host_pump(loop))
        try:
            returncode = await waiter
            await self._sweep_group(proc.pid)
            # The server's last lines (and its stderr) are still in the pipes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(server_task), timeout=2.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(stderr_task), timeout=1.0)
            await self._fail_pending(returncode)
            assert self._host is not None
            await self._host.flush()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for task in (host_task, server_task, stderr_task):
                task.cancel()
            for task in (host_task, server_task, stderr_task):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self._shutdown_task is not None:
                self._shutdown_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._shutdown_task
            self.evaluator.close()
            if self.killer is not None:
                self.killer.close()
        status = exit_status(returncode)
        if self._failed_to_start(returncode):
            self._explain_failed_start(status)
        if self._session_killed:
            status = EXIT_SESSION_KILLED
        await self._record(
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

    def _start_event(self) -> AuditEvent:
        policy = self.evaluator.policy
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
            policy_hash=policy.hash,
            detail=detail,
        )

    async def _open_host_writer(self, loop: asyncio.AbstractEventLoop) -> asyncio.StreamWriter:
        pipe = os.fdopen(self._host_out_fd, "wb", buffering=0, closefd=False)
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.streams.FlowControlMixin(loop), pipe
        )
        return asyncio.StreamWriter(transport, protocol, None, loop)

    async def _failed_to_spawn(self, exc: OSError) -> int:
        command = shlex.join(self.config.command)
        status = EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_NOT_EXECUTABLE
        message = f"cannot start the MCP server `{command}`: {exc.strerror or exc}"
        self._stderr(f"agentwall wrap: error: {message}\n".encode())
        await self._record(
            AuditEvent(event="error", session=self.session, transport="stdio", reason=message)
        )
        await self._record(
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

    # -- host -> server ---------------------------------------------------------------

    async def _host_pump(self, loop: asyncio.AbstractEventLoop) -> None:
        reader = asyncio.StreamReader(limit=_READ_CHUNK, loop=loop)
        read: Callable[[], Any]
        if _pollable(self._host_in_fd):
            pipe = os.fdopen(self._host_in_fd, "rb", buffering=0, closefd=False)
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
            read = lambda: reader.read(_READ_CHUNK)  # noqa: E731
        else:
            read = lambda: asyncio.to_thread(os.read, self._host_in_fd, _READ_CHUNK)  # noqa: E731
        framer = self._host_framer
        try:
            while True:
                chunk = await read()
                if not chunk:
                    break
                for item in framer.feed(chunk):
                    await self._from_host(item)
                if self._session_killed:
                    return
            for item in framer.eof():
                await self._from_host(item)
        except OSError as exc:
            log.warning("reading from the host failed: %s", exc)
        self._begin_shutdown("the host closed its end (stdin EOF)", graceful=True)

    async def _from_host(self, item: bytes | LineTooLong | TruncatedLine) -> None:
        if isinstance(item, LineTooLong):
            await self._host_frame_error(
                FrameError(
                    f"message line longer than {item.limit} bytes; discarded",
                    rpc_code=INVALID_REQUEST,
                    rpc_id=sniff_id(item.head),
                )
            )
            return
        if isinstance(item, TruncatedLine):
            data = item.data
            partial = True
        else:
            data = item
            partial = False
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
            await self._host_frame_error(exc)
            return
        message = parsed.message
        if isinstance(message, list):
            await self._host_batch(message, received_ns)
            return
        forward = await self._judge_host_message(message, received_ns)
        if forward is not None:
            wire = parsed.wire if forward is message else encode_message(forward)
            await self._forward_to_server(forward, wire)

    async def _host_batch(self, batch: list[Message | FrameError], received_ns: int) -> None:
        out: list[Message | FrameError] = []
        for item in batch:
            if isinstance(item, FrameError):
                await self._host_frame_error(item)
                continue
            forward = await self._judge_host_message(item, received_ns)
            if forward is not None:
                out.append(forward)
        if out:
            wire = encode_message(out)
            for item in out:
                if isinstance(item, Request):
                    self._pending[item.id] = item.method
            if not await self._server_send(wire):
                for item in out:
                    if isinstance(item, Request):
                        await self._server_unreachable(item)

    async def _judge_host_message(self, message: Message, received_ns: int) -> Message | None:
        """Returns what to forward to the server, or None (answered here)."""
        if isinstance(message, Response | ErrorResponse):
            if message.id is None or self._server_pending.pop(message.id, None) is None:
                self._note(f"dropped a response from the host for unknown id {message.id!r}")
                return None
            return message
        if isinstance(message, Request) and message.id in self._pending:
            await self._to_host(
                error_response(
                    message.id,
                    INVALID_REQUEST,
                    f"request id {message.id!r} is already in use by a pending request",
                )
            )
            return None
        judged = await self._judge(message, "client", received_ns)
        if judged is None:
            return None
        decision, outcome, forward = judged
        if outcome in ("deny", "error"):
            if isinstance(message, Request):
                await self._to_host(self._refusal(message.id, decision, outcome))
            if outcome == "deny":
                await self._enforce_kill(decision)
            return None
        if isinstance(forward, Notification) and forward.method == "notifications/cancelled":
            # The server may never answer a cancelled request; nor must we.
            params = forward.params
            if isinstance(params, dict):
                cancelled = params.get("requestId")
                if isinstance(cancelled, int | str) and not isinstance(cancelled, bool):
                    self._pending.pop(cancelled, None)
        return forward

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
        return error_response(
            rpc_id, POLICY_DENIED, denial_message(decision), denial_data(decision)
        )

    async def _host_frame_error(self, exc: FrameError) -> None:
        await self._record(
            AuditEvent(
                event="error",
                session=self.session,
                transport="stdio",
                rpc_id=exc.rpc_id,
                reason=f"invalid message from the host: {exc}",
                detail={"direction": "host", "code": exc.rpc_code},
            ),
            quiet=True,
        )
        await self._to_host(error_response(exc.rpc_id, exc.rpc_code, str(exc)))

    async def _forward_to_server(self, message: Message, wire: bytes) -> None:
        if isinstance(message, Request):
            self._pending[message.id] = message.method
        if not await self._server_send(wire) and isinstance(message, Request):
            await self._server_unreachable(message)

    async def _server_unreachable(self, request: Request) -> None:
        if self._pending.pop(request.id, None) is not None:
            await self._to_host(
                error_response(
                    request.id,
                    UPSTREAM_UNAVAILABLE,
                    "the MCP server is not reading its input; the request was not delivered",
                )
            )

    async def _server_send(self, wire: bytes) -> bool:
        pipe = self._server_in
        return pipe is not None and await pipe.send(wire)

    # -- server -> host ---------------------------------------------------------------

    async def _server_pump(self, stdout: asyncio.StreamReader) -> None:
        framer = self._server_framer
        try:
            while True:
                chunk = await stdout.read(_READ_CHUNK)
                if not chunk:
                    break
                for item in framer.feed(chunk):
                    await self._from_server(item)
            for item in framer.eof():
                await self._from_server(item)
        except OSError as exc:
            log.warning("reading from the MCP server failed: %s", exc)

    async def _from_server(self, item: bytes | LineTooLong | TruncatedLine) -> None:
        if isinstance(item, LineTooLong):
            await self._dropped_server_output(
                f"a line longer than {item.limit} bytes", sniff_id(item.head), item.head
            )
            return
        data = item.data if isinstance(item, TruncatedLine) else item
        received_ns = time.time_ns()
        try:
            parsed = parse(data, max_size=self.config.max_line, max_depth=self.config.max_depth)
        except FrameError as exc:
            await self._dropped_server_output(str(exc), exc.rpc_id, data)
            return
        self._server_spoke = True
        message = parsed.message
        if isinstance(message, list):
            out: list[Message | FrameError] = []
            for entry in message:
                if isinstance(entry, FrameError):
                    await self._dropped_server_output(str(entry), entry.rpc_id)
                    continue
                forward = await self._judge_server_message(entry, received_ns)
                if forward is not None:
                    out.append(forward)
            if out:
                await self._to_host(encode_message(out))
            return
        forward = await self._judge_server_message(message, received_ns)
        if forward is not None:
            await self._to_host(parsed.wire if forward is message else encode_message(forward))

    async def _judge_server_message(self, message: Message, received_ns: int) -> Message | None:
        if isinstance(message, Response | ErrorResponse):
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
        judged = await self._judge(message, "server", received_ns)
        if judged is None:
            return None
        decision, outcome, forward = judged
        if outcome in ("deny", "error"):
            # The server must not wait forever for an answer the host will
            # never see: refuse it in the host's place.
            if isinstance(message, Request):
                await self._server_send(self._refusal(message.id, decision, outcome))
            return None
        if isinstance(forward, Request):
            self._server_pending[forward.id] = forward.method
        return forward

    async def _dropped_server_output(
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
        if count == 1:
            await self._record(
                AuditEvent(
                    event="error",
                    session=self.session,
                    transport="stdio",
                    reason=f"invalid output from the MCP server dropped: {why}",
                    detail={"direction": "server", "note": "later drops are counted at stop"},
                ),
                quiet=True,
            )
        if rpc_id is not None and self._pending.pop(rpc_id, None) is not None:
            await self._to_host(
                error_response(
                    rpc_id, UPSTREAM_UNAVAILABLE, f"the MCP server sent an invalid answer: {why}"
                )
            )

    async def _relay_stderr(self, stderr: asyncio.StreamReader) -> None:
        while True:
            chunk = await stderr.read(_READ_CHUNK)
            if not chunk:
                return
            self._stderr(chunk)
            self._stderr_tail.append(chunk)
            self._stderr_tail_size += len(chunk)
            while self._stderr_tail_size - len(self._stderr_tail[0]) >= _STDERR_TAIL:
                self._stderr_tail_size -= len(self._stderr_tail.popleft())

    # -- judging ------------------------------------------------------------------------

    async def _judge(
        self, message: Request | Notification, origin: Origin, received_ns: int
    ) -> tuple[Decision, AuditOutcome, Message] | None:
        """Evaluate and record.  Returns (decision, outcome, what to forward);
        None when the message was malformed and has been answered."""
        call_id = f"{self.session}-{next(self._call_ids)}"
        try:
            call = make_call(
                message,
                session=self.session,
                transport="stdio",
                origin=origin,
                call_id=call_id,
                identity=None,
                now_ns=received_ns,
            )
        except FrameError as exc:
            await self._malformed(message, origin, call_id, exc)
            return None
        decision = self.evaluator.decide(call, received_ns)
        verdict = decision.verdict
        passes = verdict in PASSING_VERDICTS
        outcome: AuditOutcome
        if passes:
            outcome = verdict
        elif self.config.dry_run:
            outcome = "dry_run_deny"
        else:
            outcome = "deny"
        event = self._decision_event(call, decision, outcome, received_ns)
        try:
            await self.audit.record(event)
        except AuditError as exc:
            self._note(f"audit entry for {call_id} could not be made durable: {exc}; refused")
            return decision, "error", message
        forward: Message = message
        if verdict == "redact" and decision.redactions and message.params is not msgspec.UNSET:
            params = apply_redactions(message.params, decision.redactions)
            forward = msgspec.structs.replace(message, params=params)
        return decision, outcome, forward

    async def _malformed(
        self, message: Request | Notification, origin: Origin, call_id: str, exc: FrameError
    ) -> None:
        rpc_id = message.id if isinstance(message, Request) else None
        await self._record(
            AuditEvent(
                event="decision",
                session=self.session,
                transport="stdio",
                call_id=call_id,
                rpc_id=rpc_id,
                method=message.method,
                decision="deny",
                rule_id="request.malformed",
                reason=str(exc),
                category="malformed",
                detail={"origin": origin},
            ),
            quiet=True,
        )
        if rpc_id is None:
            return
        reply = error_response(rpc_id, exc.rpc_code, str(exc))
        if origin == "client":
            await self._to_host(reply)
        else:
            await self._server_send(reply)

    def _decision_event(
        self, call: Call, decision: Decision, outcome: AuditOutcome, received_ns: int
    ) -> AuditEvent:
        params: Any = None
        masked: tuple[str, ...] = ()
        if self._mask is not None:
            params, masked = self._mask(call.params)
        return AuditEvent(
            event="decision",
            session=call.session,
            transport="stdio",
            call_id=call.call_id,
            rpc_id=call.rpc_id,
            method=call.method,
            target=call.target or None,
            decision=outcome,
            rule_id=decision.rule_id,
            reason=decision.reason,
            pointer=decision.pointer,
            args_sha256=sha256_hex(call.params_json),
            latency_us=(time.time_ns() - received_ns) // 1000,
            policy_hash=decision.policy_hash,
            category=decision.category,
            params=params,
            masked=masked,
            detail=None if call.origin == "client" else {"origin": "server"},
        )

    async def _record(self, event: AuditEvent, *, quiet: bool = False) -> bool:
        try:
            await self.audit.record(event)
        except AuditError as exc:
            self._note(f"audit entry ({event.event}) could not be written: {exc}")
            if not quiet:
                log.error("audit entry %s could not be written: %s", event.event, exc)
            return False
        return True

    # -- kill modes ---------------------------------------------------------------------

    async def _enforce_kill(self, decision: Decision) -> None:
        mode = self.config.kill_mode
        if mode == "none" or self.config.dry_run:
            return
        if mode in ("process", "both") and self.killer is not None:
            ok, detail = self.killer.kill(None if self._proc is None else self._proc.pid)
            self._note(f"kill-mode {mode}: {detail}")
            await self._record(
                AuditEvent(
                    event="error",
                    session=self.session,
                    transport="stdio",
                    call_id=decision.call_id,
                    reason=detail,
                    detail={
                        "action": "kill",
                        "kill_mode": mode,
                        "ok": ok,
                        "pid": self.killer.pid,
                    },
                )
            )
        if mode in ("connection", "both"):
            self._session_killed = True
            self._begin_shutdown(
                f"kill-mode {mode}: session ended after denial {decision.call_id}", graceful=False
            )

    # -- shutdown -----------------------------------------------------------------------

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        self._signalled = sig
        self._note(f"received {name}; forwarding it to the MCP server")
        self._signal_group(sig)
        self._begin_shutdown(f"received {name}", graceful=True, close_stdin=False)

    def _on_sighup(self) -> None:
        task = asyncio.ensure_future(self._reload())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
            await self._record(
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
        await self._record(
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
        self._shutdown_task = asyncio.ensure_future(self._stop_server(graceful, close_stdin))

    async def _stop_server(self, graceful: bool, close_stdin: bool) -> None:
        """MCP stdio shutdown: close the server's stdin, wait; SIGTERM, wait;
        SIGKILL.  Forwarded signals skip the first step (the server already
        has the signal)."""
        grace = self.config.grace_s
        if close_stdin and self._server_in is not None:
            await self._server_in.flush()
            self._server_in.close()
        if graceful and await self._wait_exit(grace):
            return
        self._signal_group(signal.SIGTERM)
        if await self._wait_exit(grace):
            return
        self._note(f"the MCP server did not exit {grace:g}s after SIGTERM; sending SIGKILL")
        self._signal_group(signal.SIGKILL)

    async def _wait_exit(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self._server_exited.wait()
        except TimeoutError:
            return False
        return True

    def _signal_group(self, sig: int) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)

    async def _sweep_group(self, pgid: int) -> None:
        """The server has exited; anything it left in its process group
        would be an orphan: SIGTERM it, then SIGKILL what remains."""
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

    async def _fail_pending(self, returncode: int) -> None:
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
        await self._record(
            AuditEvent(
                event="error",
                session=self.session,
                transport="stdio",
                reason=f"{why} with {len(pending)} request(s) unanswered",
                detail={"pending": pending[:100], "server_exit": returncode},
            )
        )
        for rpc_id in pending:
            await self._to_host(
                error_response(rpc_id, UPSTREAM_UNAVAILABLE, f"{why} before answering")
            )

    # -- output helpers ------------------------------------------------------------------

    async def _to_host(self, line: bytes) -> None:
        host = self._host
        if host is None or not await host.send(line):
            self._begin_shutdown("the host stopped reading (stdout closed)", graceful=True)

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
    "WrapConfig",
    "apply_redactions",
    "denial_data",
    "denial_message",
    "exit_status",
    "run_wrap",
    "split_command",
)
