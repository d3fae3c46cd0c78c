"""The audit writer process and the client the front-end uses to reach it.

``python -m agentwall.io.audit_writer --log-path L --socket S`` is the single
owner of the audit log (``agentwall.audit.log.AuditLog``).  Front-end
processes connect over a Unix socket and send ``Append`` frames
(``agentwall.ipc.wire`` framing, msgpack bodies).  The writer's loop is group
commit: wait until something is readable, read *everything* waiting on every
connection, seal it as one batch, write, fdatasync, and only then acknowledge
each request with its first seq.  While one fdatasync runs, the next batch
gathers in the socket buffers, so throughput grows with concurrency while a
lone caller pays one fsync.

``AuditWriterClient`` is the front-end's ``AuditSink``: ``record`` returns
the seq once the writer acknowledged it, and raises ``AuditError`` promptly
when it cannot: not connected, the writer reported a failed write, the
connection dropped with the entry in flight, or no ack within the deadline.
``AuditWriterProcess`` spawns, stops and (``supervise``) restarts the writer;
a restarted writer resumes the chain, recording any recovery.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final, cast

import msgspec

from agentwall.audit.batcher import GroupCommitBatcher
from agentwall.audit.keys import load_audit_key
from agentwall.audit.log import AuditLog, LogStats
from agentwall.errors import AgentwallError, AuditError, AuditEventError, FrameError
from agentwall.ipc.wire import FrameDecoder, encode_frame
from agentwall.types import AuditEvent

# --- the channel's messages -----------------------------------------------------------


class Append(msgspec.Struct, tag="a", array_like=True):
    """``events`` items are structs, or (rarely) bytes holding one event as
    msgspec JSON: msgpack cannot carry integers beyond 64 bits, which
    JSON-RPC params may hold and the log keeps exactly."""

    id: int
    events: list[AuditEvent | bytes]


class StatsQuery(msgspec.Struct, tag="q", array_like=True):
    id: int


class Ack(msgspec.Struct, tag="k", array_like=True):
    """Every event of request ``id`` is durable; they got seqs first_seq.. in order."""

    id: int
    first_seq: int


class Failed(msgspec.Struct, tag="f", array_like=True):
    """No event of request ``id`` may be treated as durable."""

    id: int
    reason: str


class WriterStats(msgspec.Struct, frozen=True):
    pid: int
    started_unix: float
    connections: int
    log: LogStats


class StatsReply(msgspec.Struct, tag="s", array_like=True):
    id: int
    stats: WriterStats


Request = Append | StatsQuery
Reply = Ack | Failed | StatsReply

_REQUEST_DECODER: Final = msgspec.msgpack.Decoder(Request)
_JSON_EVENT: Final = msgspec.json.Decoder(AuditEvent)
_REPLY_DECODER: Final = msgspec.msgpack.Decoder(Reply)

READY_PREFIX: Final = b"READY "
ERROR_PREFIX: Final = b"ERROR "
EXIT_LOG_BROKEN: Final = 3


# --- the writer process ---------------------------------------------------------------


class _Conn:
    __slots__ = ("decoder", "out", "sock", "writing")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = FrameDecoder()
        self.out = bytearray()
        self.writing = False


class _Pending(msgspec.Struct):
    conn: _Conn
    id: int
    events: list[AuditEvent]


class WriterLoop:
    """The writer's select loop.  Single-threaded: the fdatasync blocks it, and
    that is the point: requests pile up meanwhile and form the next batch."""

    def __init__(
        self,
        log: AuditLog,
        listener: socket.socket,
        *,
        max_batch_entries: int = 4096,
        max_batch_bytes: int = 8 << 20,
        idle_s: float = 0.5,
    ) -> None:
        self.log = log
        self.listener = listener
        listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, None)
        self.batcher: GroupCommitBatcher[_Pending] = GroupCommitBatcher(
            max_entries=max_batch_entries, max_bytes=max_batch_bytes
        )
        self.conns: set[_Conn] = set()
        self.idle_s = idle_s
        self.stopping = False
        self.started_unix = time.time()
        self._encoder = msgspec.msgpack.Encoder()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._parent = os.getppid()

    @property
    def wakeup_fd(self) -> int:
        return self._wake_w.fileno()

    def request_stop(self) -> None:
        self.stopping = True

    def run(self) -> int:
        """Serve until asked to stop (then drain) or the log breaks."""
        select = self.selector.select
        while True:
            waiting = len(self.batcher) > 0
            events = select(0 if waiting else self.idle_s)
            for key, mask in events:
                if key.data is None:
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        self._wake_r.recv(4096)
                else:
                    conn: _Conn = key.data
                    if mask & selectors.EVENT_READ:
                        self._read(conn)
                    if mask & selectors.EVENT_WRITE and conn in self.conns:
                        self._flush(conn)
            while self.batcher.due(time.monotonic_ns()):
                self._commit(self.batcher.take())
                if self.log.broken is not None:
                    self._flush_all()
                    return EXIT_LOG_BROKEN
            self._flush_all()
            if not events:
                self._idle()
                if self.log.broken is not None:
                    return EXIT_LOG_BROKEN
            if self.stopping and not len(self.batcher):
                return 0

    def _idle(self) -> None:
        with contextlib.suppress(AuditError):
            self.log.sync_head()  # a failure marks the log broken: run() exits
        if os.getppid() != self._parent:
            # The proxy that started us is gone (even SIGKILL): do not hold
            # the log's lock against its successor.
            self.stopping = True

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            conn = _Conn(sock)
            self.conns.add(conn)
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def _drop(self, conn: _Conn) -> None:
        if conn in self.conns:
            self.conns.discard(conn)
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(conn.sock)
            conn.sock.close()

    def _read(self, conn: _Conn) -> None:
        now = time.monotonic_ns()
        offer = self.batcher.offer
        while True:
            try:
                data = conn.sock.recv(1 << 18)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(conn)
                return
            if not data:
                self._drop(conn)
                return
            try:
                payloads = conn.decoder.feed(data)
                for payload in payloads:
                    msg = _REQUEST_DECODER.decode(payload)
                    if type(msg) is Append:
                        events = msg.events
                        if bytes in map(type, events):
                            events = [
                                _JSON_EVENT.decode(e) if type(e) is bytes else e for e in events
                            ]
                        offer(
                            _Pending(conn, msg.id, cast(list[AuditEvent], events)),
                            entries=len(events),
                            nbytes=len(payload),
                            now_ns=now,
                        )
                    else:
                        self._send(conn, StatsReply(msg.id, self.stats()))
            except (FrameError, msgspec.DecodeError):
                # A peer that speaks garbage gets no acks: dropping it makes
                # its client fail every call in flight, which is fail-closed.
                self._drop(conn)
                return

    def _commit(self, batch: list[_Pending]) -> None:
        events: list[AuditEvent] = []
        for pending in batch:
            events += pending.events
        try:
            seqs = self.log.append_batch(events)
        except AuditEventError:
            if len(batch) > 1:
                # One request's event cannot be encoded: commit the others
                # without it rather than refuse everyone's calls.
                for pending in batch:
                    self._commit([pending])
                return
            self._send(batch[0].conn, Failed(batch[0].id, "an audit event cannot be encoded"))
            return
        except AuditError as exc:
            reason = str(exc)
            for pending in batch:
                self._send(pending.conn, Failed(pending.id, reason))
            return
        seq = seqs[0] if seqs else 0
        for pending in batch:
            self._send(pending.conn, Ack(pending.id, seq))
            seq += len(pending.events)

    def _send(self, conn: _Conn, msg: Reply) -> None:
        if conn in self.conns:
            conn.out += encode_frame(self._encoder.encode(msg))

    def _flush_all(self) -> None:
        for conn in list(self.conns):
            if conn.out and not conn.writing:
                self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(conn)
            return
        del conn.out[:sent]
        want_write = bool(conn.out)
        if want_write != conn.writing:
            conn.writing = want_write
            mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
            self.selector.modify(conn.sock, mask, conn)

    def stats(self) -> WriterStats:
        return WriterStats(os.getpid(), self.started_unix, len(self.conns), self.log.stats())

    def close(self) -> None:
        for conn in list(self.conns):
            self._drop(conn)
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()


def bind_listener(path: Path) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale socket from a writer that died
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(1024)
    return sock


def _report(fd: int | None, line: bytes) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, line)
        os.close(fd)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentwall.io.audit_writer")
    parser.add_argument("--log-path", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--key-file")
    parser.add_argument("--log-max-bytes", type=int)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--max-batch-entries", type=int, default=4096)
    parser.add_argument("--head-sync-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    # Writes past RLIMIT_FSIZE must fail with EFBIG (then AuditError), not kill us.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # Ctrl-C reaches the whole process group; the proxy stops us itself, after
    # its last entries (proxy_stop) are written.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        key = load_audit_key(args.key_file)
        for warning in key.warnings:
            print(f"agentwall audit-writer: warning: {warning}", file=sys.stderr, flush=True)
        log = AuditLog.open(
            args.log_path,
            key,
            max_bytes=args.log_max_bytes,
            head_sync_interval_s=args.head_sync_interval,
        )
    except AgentwallError as exc:
        _report(args.ready_fd, ERROR_PREFIX + exc.diagnostics().encode("utf-8", "replace") + b"\n")
        print(f"agentwall audit-writer: error: {exc.diagnostics()}", file=sys.stderr, flush=True)
        return 2
    for note in log.startup_notes:
        print(f"agentwall audit-writer: {note}", file=sys.stderr, flush=True)
    try:
        listener = bind_listener(Path(args.socket))
    except OSError as exc:
        log.close()
        message = f"cannot listen on {args.socket}: {exc.strerror or exc}"
        _report(args.ready_fd, ERROR_PREFIX + message.encode() + b"\n")
        return 2
    loop = WriterLoop(log, listener, max_batch_entries=args.max_batch_entries)
    signal.set_wakeup_fd(loop.wakeup_fd)
    signal.signal(signal.SIGTERM, lambda *_: loop.request_stop())
    _report(args.ready_fd, READY_PREFIX + f"{os.getpid()} {log.tip.seq} {key.key_id}\n".encode())
    try:
        code = loop.run()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        loop.close()
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            Path(args.socket).unlink()
        log.close()
    if code == EXIT_LOG_BROKEN:
        print(
            f"agentwall audit-writer: error: {log.broken}; exiting so a fresh writer can "
            "recover the log",
            file=sys.stderr,
            flush=True,
        )
    return code


# --- spawning and supervising it ------------------------------------------------------


class AuditWriterProcess:
    """Spawns the writer as a real separate process and keeps it running.

    ``start()`` returns once the writer has opened (and if needed recovered)
    the log and listens; it raises ``AuditError`` with the writer's own
    message otherwise.  ``supervise()`` (a task in the front-end's loop)
    restarts it whenever it exits unexpectedly, with backoff.
    """

    def __init__(
        self,
        log_path: str | Path,
        *,
        socket_path: str | Path | None = None,
        key_file: str | Path | None = None,
        max_bytes: int | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout_s: float = 15.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.log_path = Path(log_path)
        self._own_dir: Path | None = None
        if socket_path is None:
            # AF_UNIX paths are limited to ~107 bytes: keep it short.
            self._own_dir = Path(tempfile.mkdtemp(prefix="agentwall-audit-"))
            socket_path = self._own_dir / "writer.sock"
        self.socket_path = Path(socket_path)
        self.key_file = Path(key_file) if key_file is not None else None
        self.max_bytes = max_bytes
        self.env = dict(env) if env is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.last_exit: int | None = None
        self.last_error: str | None = None
        self._stopping = False

    def command(self, ready_fd: int) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "agentwall.io.audit_writer",
            "--log-path",
            str(self.log_path),
            "--socket",
            str(self.socket_path),
            "--ready-fd",
            str(ready_fd),
        ]
        if self.key_file is not None:
            cmd += ["--key-file", str(self.key_file)]
        if self.max_bytes is not None:
            cmd += ["--log-max-bytes", str(self.max_bytes)]
        return cmd + list(self.extra_args)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.alive:
            return
        self._stopping = False
        read_fd, write_fd = os.pipe()
        try:
            self.process = subprocess.Popen(
                self.command(write_fd),
                pass_fds=(write_fd,),
                env=self.env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(write_fd)
        try:
            line = self._read_ready(read_fd)
        finally:
            os.close(read_fd)
        if line.startswith(READY_PREFIX):
            self.last_error = None
            return
        # Failed: collect the reason and the exit code.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.last_exit = self.process.returncode
        if line.startswith(ERROR_PREFIX):
            reason = line[len(ERROR_PREFIX) :].decode("utf-8", "replace").strip()
        elif not line:
            reason = f"it exited with status {self.last_exit} before it was ready"
        else:
            reason = f"unexpected readiness report {line!r}"
        self.last_error = reason
        raise AuditError(f"the audit writer did not start: {reason}")

    def _read_ready(self, fd: int) -> bytes:
        deadline = time.monotonic() + self.startup_timeout_s
        data = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in data:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return (
                        b"ERROR no readiness report within "
                        + f"{self.startup_timeout_s:g}s".encode()
                        + b"\n"
                    )
                if not sel.select(remaining):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
        return data

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM: the writer commits what it has read, then exits."""
        self._stopping = True
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.last_exit = proc.returncode
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL, for tests and for a writer that will not stop."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def cleanup(self) -> None:
        if self._own_dir is not None:
            with contextlib.suppress(OSError):
                self.socket_path.unlink()
            with contextlib.suppress(OSError):
                self._own_dir.rmdir()

    async def supervise(
        self,
        *,
        poll_interval_s: float = 0.05,
        max_backoff_s: float = 2.0,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        """Restart the writer whenever it exits without ``stop()``.  Runs until
        cancelled or stopped."""
        loop = asyncio.get_running_loop()
        backoff = poll_interval_s
        while not self._stopping:
            await asyncio.sleep(poll_interval_s)
            proc = self.process
            if self._stopping or proc is None or proc.poll() is None:
                continue
            self.last_exit = proc.returncode
            try:
                await loop.run_in_executor(None, self.start)
            except AuditError as exc:
                if on_restart is not None:
                    on_restart(f"audit writer restart failed: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(max_backoff_s, backoff * 2)
                continue
            backoff = poll_interval_s
            self.restarts += 1
            if self.stopping:  # stop() raced with this restart
                await loop.run_in_executor(None, self.stop)
                return
            if on_restart is not None:
                on_restart(
                    f"audit writer exited with status {self.last_exit}; restarted (pid {self.pid})"
                )


# --- the clients ------------------------------------------------------------------------


def _append_payload(
    encoder: msgspec.msgpack.Encoder, msg_id: int, events: Sequence[AuditEvent]
) -> bytes:
    """One ``Append`` request.  An event msgpack cannot carry (an integer
    beyond 64 bits, which the log keeps exactly) travels as msgspec JSON;
    one JSON cannot carry either raises."""
    try:
        return encoder.encode(Append(msg_id, list(events)))
    except (OverflowError, TypeError, ValueError):
        return encoder.encode(Append(msg_id, [_wire_item(encoder, e) for e in events]))


def _wire_item(encoder: msgspec.msgpack.Encoder, event: AuditEvent) -> AuditEvent | bytes:
    try:
        encoder.encode(event)
    except (OverflowError, TypeError, ValueError):
        return msgspec.json.encode(event)
    return event


# --- an evaluator worker's client ------------------------------------------------------


class AuditChannel:
    """The writer's protocol for a process that runs its own select loop (an
    evaluator worker): ``submit`` sends a request and returns its id at once,
    the caller waits on ``sock`` and ``collect``s the answers, which come in
    request order.  So the caller can go on working while its entries sync.

    Any failure (the writer gone or refusing to talk, a request it cannot
    encode) raises ``AuditError``; the caller then drops every request in
    flight with ``close``, since a late answer must never be read as a later
    request's, and the next ``submit`` connects again, so a restarted writer
    is picked up."""

    def __init__(self, socket_path: str | Path, *, deadline_s: float = 2.0) -> None:
        self.socket_path = str(socket_path)
        self.deadline_s = deadline_s
        self.sock: socket.socket | None = None
        self._frames = FrameDecoder()
        self._encoder = msgspec.msgpack.Encoder()
        self._next_id = 1

    def submit(self, events: Sequence[AuditEvent]) -> int:
        """Sends ``events`` as one request; its id."""
        try:
            sock = self.sock
            if sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock = sock
                self._frames = FrameDecoder()
                sock.settimeout(self.deadline_s)
                sock.connect(self.socket_path)
            msg_id = self._next_id
            self._next_id += 1
            sock.settimeout(self.deadline_s)
            # MSG_NOSIGNAL: a dead writer is an EPIPE to report, not a SIGPIPE
            # that kills the caller (workers keep SIGPIPE's default).
            payload = _append_payload(self._encoder, msg_id, events)
            sock.sendall(encode_frame(payload), socket.MSG_NOSIGNAL)
        except (OSError, FrameError, OverflowError, TypeError, ValueError) as exc:
            self.close()
            raise AuditError(f"audit writer: {type(exc).__name__}: {exc}") from exc
        return msg_id

    def collect(self) -> list[tuple[int, str | None]]:
        """The answers waiting on ``sock`` (call when it is readable): each
        request's id, and None when its events are durable or why not."""
        assert self.sock is not None
        try:
            self.sock.settimeout(0)
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("the audit writer closed the connection")
            out: list[tuple[int, str | None]] = []
            for raw in self._frames.feed(data):
                reply = _REPLY_DECODER.decode(raw)
                if type(reply) is Ack:
                    out.append((reply.id, None))
                elif type(reply) is Failed:
                    out.append((reply.id, f"audit entry not durable ({reply.reason})"))
                else:
                    raise FrameError(f"unexpected answer {type(reply).__name__}")
            return out
        except (BlockingIOError, InterruptedError):
            return []
        except (OSError, FrameError, msgspec.DecodeError) as exc:
            self.close()
            raise AuditError(f"audit writer: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


# --- the front-end's client ------------------------------------------------------------


ACK_BUCKETS_US: Final = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 1_000_000)


class ClientStats(msgspec.Struct, frozen=True):
    connected: bool
    ready: bool
    status: str
    recorded: int
    failed: int
    deadline_expired: int
    reconnects: int
    ack_us_buckets: tuple[int, ...]
    ack_us_counts: tuple[int, ...]
    ack_us_sum: int


class _Inflight:
    __slots__ = ("futures", "sent_at")

    def __init__(self, futures: list[asyncio.Future[int]], sent_at: float) -> None:
        self.futures = futures
        self.sent_at = sent_at


class _Protocol(asyncio.Protocol):
    def __init__(self, client: AuditWriterClient) -> None:
        self.client = client
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            payloads = self.decoder.feed(data)
            for payload in payloads:
                self.client._on_reply(_REPLY_DECODER.decode(payload))
        except (FrameError, msgspec.DecodeError):
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._on_lost(self, exc)


class AuditWriterClient:
    """``AuditSink`` over the writer's socket.  Use from one event loop.

    Every ``record`` call made in the same loop iteration goes out as one
    frame; the writer's group commit then batches frames from every
    connection.  A call fails with ``AuditError`` rather than wait past
    ``deadline_s``; while the connection is down, calls fail at once and the
    client reconnects in the background.
    """

    def __init__(
        self,
        socket_path: str | Path,
        *,
        deadline_s: float = 2.0,
        reconnect_interval_s: float = 0.02,
    ) -> None:
        self.socket_path = str(socket_path)
        self.deadline_s = deadline_s
        self.reconnect_interval_s = reconnect_interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proto: _Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._encoder = msgspec.msgpack.Encoder()
        self._next_id = 1
        self._batch_events: list[AuditEvent] = []
        self._batch_futures: list[asyncio.Future[int]] = []
        self._flush_scheduled = False
        self._just_acked = False
        self._inflight: dict[int, _Inflight] = {}
        self._stats_waiters: dict[int, asyncio.Future[WriterStats]] = {}
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closed = False
        self._unhealthy: str | None = None
        self._down_reason = "not connected to the audit writer"
        self._recorded = 0
        self._failed = 0
        self._deadline_expired = 0
        self._reconnects = 0
        self._ack_counts = [0] * (len(ACK_BUCKETS_US) + 1)
        self._ack_us_sum = 0

    # -- connection --

    async def connect(self, timeout_s: float = 10.0) -> None:
        """Connect now, retrying until ``timeout_s``; raises ``AuditError``."""
        self._loop = asyncio.get_running_loop()
        deadline = self._loop.time() + timeout_s
        while True:
            try:
                await self._open()
                return
            except OSError as exc:
                if self._loop.time() >= deadline:
                    raise AuditError(
                        f"cannot reach the audit writer at {self.socket_path}: "
                        f"{exc.strerror or exc}"
                    ) from exc
                await asyncio.sleep(self.reconnect_interval_s)

    async def _open(self) -> None:
        assert self._loop is not None
        transport, proto = await self._loop.create_unix_connection(
            lambda: _Protocol(self), self.socket_path
        )
        self._transport = transport
        self._proto = proto
        self._unhealthy = None

    def _on_lost(self, proto: _Protocol, exc: Exception | None) -> None:
        if proto is not self._proto:
            return
        self._proto = None
        self._transport = None
        reason = "the audit writer connection was lost"
        if exc is not None:
            reason += f" ({exc})"
        self._down_reason = reason
        self._fail_everything(AuditError(f"{reason}; the entry's durability is unknown"))
        if not self._closed and self._loop is not None:
            self._reconnect_task = self._loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        interval = self.reconnect_interval_s
        while not self._closed and self._proto is None:
            await asyncio.sleep(interval)
            try:
                await self._open()
            except OSError:
                interval = min(0.5, interval * 1.5)
                continue
            self._reconnects += 1

    def _fail_everything(self, error: AuditError) -> None:
        futures = self._batch_futures
        self._batch_events = []
        self._batch_futures = []
        for inflight in self._inflight.values():
            futures += inflight.futures
        self._inflight.clear()
        for fut in futures:
            if not fut.done():
                fut.set_exception(error)
                self._failed += 1
        for waiter in self._stats_waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._stats_waiters.clear()

    @property
    def connected(self) -> bool:
        return self._proto is not None

    @property
    def ready(self) -> bool:
        """For /readyz: connected, and the last write the writer tried worked."""
        return self._proto is not None and self._unhealthy is None

    @property
    def status(self) -> str:
        if self._proto is None:
            return self._down_reason
        return self._unhealthy or "ready"

    # -- the hot path --

    async def record(self, event: AuditEvent) -> int:
        if self._proto is None:
            self._failed += 1
            raise AuditError(f"audit entry not written: {self._down_reason}")
        loop = self._loop
        assert loop is not None
        fut: asyncio.Future[int] = loop.create_future()
        self._batch_events.append(event)
        self._batch_futures.append(fut)
        if not self._inflight and not self._flush_scheduled and not self._just_acked:
            # Idle: nothing to coalesce with, so send now rather than a loop
            # turn later (a lone caller's latency).  Right after an ack, the
            # callers it woke are about to record again: gather them instead.
            self._flush()
        elif not self._flush_scheduled:
            # Busy: gather every record of this loop turn into one frame.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        """Send the records gathered so far as one Append frame."""
        self._flush_scheduled = False
        events = self._batch_events
        if not events:
            return
        futures = self._batch_futures
        self._batch_events = []
        self._batch_futures = []
        transport = self._transport
        if transport is None:
            error = AuditError(f"audit entry not written: {self._down_reason}")
            for fut in futures:
                if not fut.done():
                    fut.set_exception(error)
            self._failed += len(futures)
            return
        assert self._loop is not None
        now = self._loop.time()
        try:
            wire_events = cast(list[AuditEvent | bytes], events)  # no copy: list is invariant
            frame = encode_frame(self._encoder.encode(Append(self._next_id, wire_events)))
        except (OverflowError, TypeError, ValueError, FrameError):
            # Rare: an event msgpack cannot carry, or a frame over the size
            # limit.  Send each event on its own, as JSON where needed.
            for event, fut in zip(events, futures, strict=True):
                self._send_one(event, fut, now)
            return
        self._inflight[self._next_id] = _Inflight(futures, now)
        self._next_id += 1
        transport.write(frame)
        self._arm_deadline(now)

    def _send_one(self, event: AuditEvent, fut: asyncio.Future[int], now: float) -> None:
        try:
            frame = encode_frame(_append_payload(self._encoder, self._next_id, [event]))
        except (OverflowError, TypeError, ValueError, FrameError) as exc:
            if not fut.done():
                fut.set_exception(AuditEventError(f"audit event cannot be sent: {exc}"))
            self._failed += 1
            return
        assert self._transport is not None
        self._inflight[self._next_id] = _Inflight([fut], now)
        self._next_id += 1
        self._transport.write(frame)
        self._arm_deadline(now)

    def _arm_deadline(self, now: float) -> None:
        if self._deadline_timer is None:
            assert self._loop is not None
            self._deadline_timer = self._loop.call_at(now + self.deadline_s, self._check_deadline)

    def _on_reply(self, reply: Reply) -> None:
        if type(reply) is Ack:
            inflight = self._inflight.pop(reply.id, None)
            if inflight is None:
                return  # already failed by the deadline
            seq = reply.first_seq
            for fut in inflight.futures:
                if not fut.done():
                    fut.set_result(seq)
                seq += 1
            self._recorded += len(inflight.futures)
            if not self._just_acked:
                self._just_acked = True
                assert self._loop is not None
                # Queued behind the wake-ups of the callers just resolved.
                self._loop.call_soon(self._clear_just_acked)
            assert self._loop is not None
            elapsed_us = int((self._loop.time() - inflight.sent_at) * 1e6)
            self._ack_us_sum += elapsed_us
            counts = self._ack_counts
            for i, bound in enumerate(ACK_BUCKETS_US):
                if elapsed_us <= bound:
                    counts[i] += 1
                    break
            else:
                counts[-1] += 1
            self._unhealthy = None
        elif type(reply) is Failed:
            inflight = self._inflight.pop(reply.id, None)
            self._unhealthy = f"the audit writer could not write: {reply.reason}"
            if inflight is None:
                return
            error = AuditError(reply.reason)
            for fut in inflight.futures:
                if not fut.done():
                    fut.set_exception(error)
            self._failed += len(inflight.futures)
        else:
            assert type(reply) is StatsReply
            waiter = self._stats_waiters.pop(reply.id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(reply.stats)

    def _clear_just_acked(self) -> None:
        self._just_acked = False

    def _check_deadline(self) -> None:
        self._deadline_timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        limit = now - self.deadline_s
        expired = [rid for rid, inflight in self._inflight.items() if inflight.sent_at <= limit]
        if expired:
            error = AuditError(f"the audit writer did not acknowledge within {self.deadline_s:g}s")
            self._unhealthy = str(error)
            for rid in expired:
                for fut in self._inflight.pop(rid).futures:
                    if not fut.done():
                        fut.set_exception(error)
                        self._failed += 1
                        self._deadline_expired += 1
        if self._inflight:
            oldest = min(inflight.sent_at for inflight in self._inflight.values())
            self._deadline_timer = loop.call_at(oldest + self.deadline_s, self._check_deadline)

    # -- the rest --

    async def writer_stats(self, timeout_s: float = 1.0) -> WriterStats:
        """The writer's own counters (batches, fsync times, entries, errors)."""
        if self._transport is None or self._loop is None:
            raise AuditError(f"no writer stats: {self._down_reason}")
        request_id = self._next_id
        self._next_id += 1
        waiter: asyncio.Future[WriterStats] = self._loop.create_future()
        self._stats_waiters[request_id] = waiter
        self._transport.write(encode_frame(self._encoder.encode(StatsQuery(request_id))))
        try:
            return await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError as exc:
            raise AuditError("the audit writer did not answer a stats query") from exc
        finally:
            self._stats_waiters.pop(request_id, None)

    def stats(self) -> ClientStats:
        return ClientStats(
            connected=self.connected,
            ready=self.ready,
            status=self.status,
            recorded=self._recorded,
            failed=self._failed,
            deadline_expired=self._deadline_expired,
            reconnects=self._reconnects,
            ack_us_buckets=ACK_BUCKETS_US,
            ack_us_counts=tuple(self._ack_counts),
            ack_us_sum=self._ack_us_sum,
        )

    async def __aenter__(self) -> AuditWriterClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        transport = self._transport
        self._fail_everything(AuditError("the audit client was closed"))
        self._proto = None
        self._transport = None
        self._down_reason = "the audit client was closed"
        if transport is not None:
            transport.close()


# --- /metrics ---------------------------------------------------------------------------


def _histogram(
    name: str,
    help_text: str,
    bounds: Sequence[int],
    counts: Sequence[int],
    total: int,
    scale: float = 1.0,
) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    running = 0
    for bound, count in zip(bounds, counts, strict=False):
        running += count
        lines.append(f'{name}_bucket{{le="{bound * scale:g}"}} {running}')
    running += counts[-1]
    lines.append(f'{name}_bucket{{le="+Inf"}} {running}')
    lines.append(f"{name}_sum {total * scale:g}")
    lines.append(f"{name}_count {running}")
    return lines


def render_metrics(client: ClientStats, writer: WriterStats | None) -> str:
    """Prometheus text for the audit path, for the front-end's /metrics."""
    lines = [
        "# HELP agentwall_audit_ready 1 when the audit writer is connected and writing.",
        "# TYPE agentwall_audit_ready gauge",
        f"agentwall_audit_ready {int(client.ready)}",
        "# HELP agentwall_audit_records_total Audit entries acknowledged as durable.",
        "# TYPE agentwall_audit_records_total counter",
        f"agentwall_audit_records_total {client.recorded}",
        "# HELP agentwall_audit_record_failures_total Audit records that failed (call denied).",
        "# TYPE agentwall_audit_record_failures_total counter",
        f"agentwall_audit_record_failures_total {client.failed}",
        "# HELP agentwall_audit_reconnects_total Reconnections to the audit writer.",
        "# TYPE agentwall_audit_reconnects_total counter",
        f"agentwall_audit_reconnects_total {client.reconnects}",
    ]
    lines += _histogram(
        "agentwall_audit_ack_seconds",
        "Submit to durable acknowledgement.",
        client.ack_us_buckets,
        client.ack_us_counts,
        client.ack_us_sum,
        1e-6,
    )
    if writer is not None:
        log = writer.log
        lines += [
            "# HELP agentwall_audit_entries_written_total Entries the writer made durable.",
            "# TYPE agentwall_audit_entries_written_total counter",
            f"agentwall_audit_entries_written_total {log.entries}",
            "# HELP agentwall_audit_write_errors_total Failed writes, fsyncs or rotations.",
            "# TYPE agentwall_audit_write_errors_total counter",
            f"agentwall_audit_write_errors_total {log.write_errors}",
            "# HELP agentwall_audit_last_seq Seq of the last durable entry.",
            "# TYPE agentwall_audit_last_seq gauge",
            f"agentwall_audit_last_seq {log.last_seq}",
        ]
        lines += _histogram(
            "agentwall_audit_batch_entries",
            "Entries per fsync (group commit).",
            log.batch_size_buckets,
            log.batch_size_counts,
            log.entries,
        )
        lines += _histogram(
            "agentwall_audit_fsync_seconds",
            "fdatasync time per batch.",
            log.fsync_us_buckets,
            log.fsync_us_counts,
            log.fsync_us_sum,
            1e-6,
        )
    return "\n".join(lines) + "\n"


__all__ = [
    "Ack",
    "Append",
    "AuditWriterClient",
    "AuditWriterProcess",
    "ClientStats",
    "Failed",
    "WriterLoop",
    "WriterStats",
    "main",
    "render_metrics",
]


if __name__ == "__main__":
    sys.exit(main())
