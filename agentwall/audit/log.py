"""``AuditLog``: the one in-process owner of an audit log's files and chain.

Every transport writes through one of these: the stdio wrapper in-process
(``LocalAuditSink``), the HTTP sidecar inside the audit writer process.  The
rules it keeps:

- ``append_batch`` returns only after the batch is written and fdatasynced;
  on any failure it raises ``AuditError``, leaves the file as it was before
  the batch (or, when even that cannot be ensured, refuses all further
  writes), and the chain tip does not move.
- After every durable batch, before returning, the sealed head is rewritten
  in place (``agentwall.audit.head``), so an acknowledged entry is always
  vouched for by the head.  The head is fdatasynced at most every
  ``head_sync_interval_s`` and on close: after a power loss it may lag the
  log, never lead it.
- Opening resumes the chain from the last entry, cuts and records a torn
  tail, records a head that is missing, invalid or ahead of the log, and
  records a key change; it refuses to start on damage to sealed entries.
- One process at a time: an exclusive flock on ``<log>.lock``.
- ``max_bytes`` rotates the active file after the batch that reaches it; the
  chain continues in the next file, which opens with a ``log_rotated`` entry.

This module does plain file I/O and nothing else (no sockets, no asyncio).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from agentwall.audit.chain import ChainTip, SealedBatch, seal_fields
from agentwall.audit.files import chain_files, head_path, lock_path, rotated_files, rotated_path
from agentwall.audit.head import (
    HEAD_DOMAIN,
    HEAD_SIZE,
    SLOT_SIZE,
    HeadProblem,
    head_slot,
    read_head,
    slot_offset,
)
from agentwall.audit.keys import AuditKey
from agentwall.audit.record import MacKey, parse_head, split_line
from agentwall.audit.recovery import TailScan, plan_recovery, scan_tail
from agentwall.errors import AuditError, AuditEventError
from agentwall.types import AuditEvent

BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
FSYNC_BUCKETS_US: Final = (
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    50_000,
    250_000,
    1_000_000,
)
_TAIL_WINDOW: Final = 64 * 1024


class LogStats(msgspec.Struct, frozen=True):
    """Counters for /metrics.  Histograms are per-bucket counts (not cumulative);
    the last count is everything above the last bound."""

    entries: int
    batches: int
    batch_size_buckets: tuple[int, ...]
    batch_size_counts: tuple[int, ...]
    fsync_us_buckets: tuple[int, ...]
    fsync_us_counts: tuple[int, ...]
    fsync_us_sum: int
    write_errors: int
    rotations: int
    recoveries: int
    last_seq: int
    last_error: str | None
    broken: bool


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class HeadSealer:
    """``head.head_slot`` for one key with its constant parts done once: the
    canonical body's fixed prefix, and the HMAC's inner state already fed the
    domain and that prefix.  Same bytes as ``head_slot`` (checked here once,
    and by tests/audit for any seq and mac); it runs after every batch."""

    __slots__ = ("_inner", "_outer", "_prefix")

    def __init__(self, key: MacKey) -> None:
        # Canonical form of {"key_id", "mac", "seq", "v"}: keys sorted, and
        # hex strings and an int need no escaping.
        self._prefix = b'{"key_id":"' + key.key_id.encode("ascii") + b'","mac":"'
        inner, self._outer = key.states()
        self._inner = inner.copy()
        self._inner.update(HEAD_DOMAIN + self._prefix)
        probe = ChainTip(1, "0" * 64)
        if self.slot(probe.seq, probe.mac) != head_slot(key, probe):  # pragma: no cover
            raise RuntimeError("the fast sealed-head encoding disagrees with head_slot")

    def slot(self, seq: int, mac_hex: str) -> bytes:
        """The slot for tip ``(seq, mac_hex)``; ``mac_hex`` is 64 lowercase hex
        digits (every tip is: sealed by us, or read back through
        ``split_line``, which refuses anything else)."""
        rest = b'%s","seq":%d,"v":1}' % (mac_hex.encode("ascii"), seq)
        inner = self._inner.copy()
        inner.update(rest)
        outer = self._outer.copy()
        outer.update(inner.digest())
        line = b"".join(
            (self._prefix, rest[:-1], b',"hmac":"', outer.hexdigest().encode("ascii"), b'"}')
        )
        return line.ljust(SLOT_SIZE - 1, b" ") + b"\n"


def _write_all(fd: int, data: bytes | memoryview) -> None:
    written = os.write(fd, data)
    if written == len(data):
        return
    view = memoryview(data)[written:]
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_range(path: Path, start: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(start)
        return f.read(length)


def _scan_file(path: Path, key: AuditKey) -> TailScan:
    size = path.stat().st_size
    window = _TAIL_WINDOW
    while True:
        start = max(0, size - window)
        scan = scan_tail(_read_range(path, start, size - start), start, key.mac_key)
        if scan is not None:
            return scan
        window *= 4


def _first_seq(path: Path) -> int | None:
    with path.open("rb") as f:
        line = f.readline()
    parts = split_line(line.rstrip(b"\n"))
    head = parse_head(parts[0]) if parts else None
    return head.seq if head else None


class AuditLog:
    """Open with ``AuditLog.open(path, key)``; use as a context manager or call
    ``close()``."""

    def __init__(
        self,
        path: Path,
        key: AuditKey,
        *,
        max_bytes: int | None,
        clock_us: Callable[[], int],
        head_sync_interval_s: float,
    ) -> None:
        self.path = path
        self.key = key
        self.max_bytes = max_bytes
        self._clock_us = clock_us
        self._head_sync_interval_ns = int(head_sync_interval_s * 1e9)
        self._lock_fd = -1
        self._fd = -1
        self._head_fd = -1
        self._size = 0
        self._file_first_seq = 1
        self._tip = ChainTip(0, "0" * 64)
        # bytes.fromhex(self._tip.mac), once known (the next MAC's input).
        self._tip_raw: bytes | None = None
        self._head_sealer = HeadSealer(key.mac_key)
        self._head_generation = 0
        self._head_synced_ns = 0
        self._head_dirty = False
        self._broken: str | None = None
        self.startup_notes: tuple[str, ...] = ()
        self._entries = 0
        self._batches = 0
        self._batch_counts = [0] * (len(BATCH_BUCKETS) + 1)
        self._fsync_counts = [0] * (len(FSYNC_BUCKETS_US) + 1)
        self._fsync_us_sum = 0
        self._write_errors = 0
        self._rotations = 0
        self._recoveries = 0
        self._last_error: str | None = None

    # --- opening ----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        key: AuditKey,
        *,
        max_bytes: int | None = None,
        clock_us: Callable[[], int] | None = None,
        head_sync_interval_s: float = 1.0,
    ) -> AuditLog:
        if max_bytes is not None and max_bytes < 1:
            raise AuditError("--log-max-bytes must be positive")
        log = cls(
            Path(path),
            key,
            max_bytes=max_bytes,
            clock_us=clock_us or (lambda: time.time_ns() // 1000),
            head_sync_interval_s=head_sync_interval_s,
        )
        try:
            log._open()
        except OSError as exc:
            log._close_fds()
            raise AuditError(f"cannot open the audit log {path}: {exc.strerror or exc}") from exc
        except BaseException:
            log._close_fds()
            raise
        return log

    def _open(self) -> None:
        path = self.path
        directory = path.parent
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise AuditError(
                f"another process owns the audit log {path} ({lock_path(path)} is locked)"
            ) from exc

        head_file = head_path(path)
        head_bytes = head_file.read_bytes() if head_file.exists() else b""
        head = read_head(head_bytes, {self.key.key_id: self.key.mac_key})
        if isinstance(head, HeadProblem) and not head_bytes.strip():
            head = HeadProblem("head_missing", f"the sealed head {head_file} is missing")

        scan = self._scan_chain_end()
        plan = plan_recovery(scan, head, self.key.mac_key, active_name=path.name)

        created = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if plan.truncate_to is not None:
            os.ftruncate(self._fd, plan.truncate_to)
            os.fsync(self._fd)
        self._size = os.fstat(self._fd).st_size
        self._head_fd = os.open(head_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if os.fstat(self._head_fd).st_size < HEAD_SIZE:
            os.ftruncate(self._head_fd, HEAD_SIZE)
        if created:
            _fsync_dir(directory)
        self._tip = plan.tip
        first = _first_seq(path) if self._size else None
        self._file_first_seq = first if first is not None else plan.tip.seq + 1
        self.startup_notes = plan.notes
        if plan.entries:
            self._recoveries += sum(1 for e in plan.entries if e["event"] == "recovery")
            self._commit(
                seal_fields(self.key.mac_key, self._tip, list(plan.entries), self._clock_us())
            )
        else:
            self._write_head()
        self._sync_head()

    def _scan_chain_end(self) -> TailScan | None:
        """The tail of the active file, falling back to the newest rotated
        file when the active one holds no good entry."""
        path = self.path
        active = _scan_file(path, self.key) if path.exists() else None
        if active is not None and active.tip is not None:
            return active
        for older in reversed(rotated_files(path)):
            scan = _scan_file(older, self.key)
            if scan.cut:
                raise AuditError(
                    f"{older}: the rotated audit file ends in bytes that are not a "
                    "sealed entry; run `agentwall verify-log`"
                )
            if scan.tip is not None:
                cut = active.cut if active is not None else b""
                return TailScan(scan.tip, scan.key_id, 0, cut, scan.verified)
        return active

    # --- appending --------------------------------------------------------------------

    @property
    def tip(self) -> ChainTip:
        return self._tip

    @property
    def broken(self) -> str | None:
        """Why the log refuses writes (an fsync or undo failed), or None."""
        return self._broken

    def append_batch(self, events: Sequence[AuditEvent]) -> list[int]:
        """Seal, write and fdatasync ``events``; their seqs, in order."""
        if not events:
            return []
        if self._broken is not None or self._fd < 0:
            self._check_usable()
        try:
            # seal_batch, with a lone event (every call through wrap) spared
            # the list comprehension.
            to_builtins = msgspec.to_builtins
            fields = (
                [to_builtins(events[0])]
                if len(events) == 1
                else [to_builtins(event) for event in events]
            )
            batch = seal_fields(
                self.key.mac_key, self._tip, fields, self._clock_us(), self._tip_raw
            )
        except (TypeError, ValueError, OverflowError) as exc:
            # Nothing was written: the log is as it was.
            raise AuditEventError(f"an audit event cannot be encoded: {exc}") from exc
        self._commit(batch)
        if self.max_bytes is not None and self._size >= self.max_bytes:
            self._rotate()
        return list(range(batch.first_seq, batch.first_seq + batch.count))

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise AuditError(f"the audit log {self.path} is unusable: {self._broken}")
        if self._fd < 0:
            raise AuditError(f"the audit log {self.path} is closed")

    def _fail(self, what: str, exc: OSError, *, fatal: bool) -> AuditError:
        reason = f"{what}: {exc.strerror or exc}"
        self._write_errors += 1
        self._last_error = reason
        if fatal:
            self._broken = reason
        return AuditError(f"audit entry not durable ({reason})")

    def _commit(self, batch: SealedBatch) -> None:
        data = batch.data
        fd = self._fd
        tip = batch.tip
        # The head slot for the new tip is pure computation: sealed here, it
        # is off the path from "durable" to "acknowledged" (the caller
        # forwards the call as soon as this returns).  It is still written
        # only after the fdatasync, so the head never vouches for more than
        # is durable.
        slot = self._head_sealer.slot(tip.seq, tip.mac)
        try:
            # One write syscall in the usual case; _write_all for the rest.
            written = os.write(fd, data)
            if written != len(data):
                _write_all(fd, memoryview(data)[written:])
        except OSError as exc:
            err = self._fail("write failed", exc, fatal=False)
            try:
                os.ftruncate(self._fd, self._size)
            except OSError as undo:
                self._fail("could not undo a partial write", undo, fatal=True)
            raise err from exc
        started = time.perf_counter_ns()
        try:
            os.fdatasync(fd)
        except OSError as exc:
            # After a failed fsync the kernel may have dropped the dirty pages:
            # nothing about the file can be trusted any more (the PostgreSQL
            # fsync lesson), so this log refuses further writes.
            raise self._fail("fdatasync failed", exc, fatal=True) from exc
        fsync_us = (time.perf_counter_ns() - started) // 1000
        self._size += len(data)
        self._tip = tip
        self._tip_raw = batch.tip_mac_raw or None
        self._entries += batch.count
        self._batches += 1
        # bisect_left: the index of the first bound >= value (len above the last).
        self._batch_counts[bisect_left(BATCH_BUCKETS, batch.count)] += 1
        self._fsync_counts[bisect_left(FSYNC_BUCKETS_US, fsync_us)] += 1
        self._fsync_us_sum += fsync_us
        try:
            self._write_head(slot)
        except OSError as exc:
            raise self._fail("could not update the sealed head", exc, fatal=True) from exc

    def _write_head(self, slot: bytes | None = None) -> None:
        """Write the head slot for the current tip (``slot``, when already
        sealed for it)."""
        if slot is None:
            tip = self._tip
            slot = self._head_sealer.slot(tip.seq, tip.mac)
        os.pwrite(self._head_fd, slot, slot_offset(self._head_generation))
        self._head_generation += 1
        self._head_dirty = True
        now = time.monotonic_ns()
        if now - self._head_synced_ns >= self._head_sync_interval_ns:
            self._sync_head(now)

    def _sync_head(self, now: int | None = None) -> None:
        if self._head_dirty and self._head_fd >= 0:
            os.fdatasync(self._head_fd)
            self._head_dirty = False
        self._head_synced_ns = time.monotonic_ns() if now is None else now

    def sync_head(self) -> None:
        """Flush the head now (the writer calls this when idle)."""
        if self._head_dirty and self._broken is None:
            try:
                self._sync_head()
            except OSError as exc:
                raise self._fail("could not sync the sealed head", exc, fatal=True) from exc

    def _rotate(self) -> None:
        """Move the full active file aside and continue the chain in a new one.

        Runs after a durable batch: a failure here does not fail that batch;
        it is counted and retried after the next one.
        """
        target = rotated_path(self.path, self._file_first_seq)
        if target.exists():
            self._last_error = f"cannot rotate: {target} already exists"
            self._write_errors += 1
            return
        old_fd = self._fd
        try:
            os.rename(self.path, target)
            _fsync_dir(self.path.parent)
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
            _fsync_dir(self.path.parent)
        except OSError as exc:
            # Whatever happened, the old descriptor still appends to the
            # durable chain (renamed or not); keep using it.
            self._fd = old_fd
            self._fail("rotation failed", exc, fatal=False)
            return
        os.close(old_fd)
        self._size = 0
        self._file_first_seq = self._tip.seq + 1
        self._rotations += 1
        event: dict[str, Any] = {"event": "log_rotated", "detail": {"previous_file": target.name}}
        self._commit(seal_fields(self.key.mac_key, self._tip, [event], self._clock_us()))

    # --- the rest -----------------------------------------------------------------------

    def stats(self) -> LogStats:
        return LogStats(
            entries=self._entries,
            batches=self._batches,
            batch_size_buckets=BATCH_BUCKETS,
            batch_size_counts=tuple(self._batch_counts),
            fsync_us_buckets=FSYNC_BUCKETS_US,
            fsync_us_counts=tuple(self._fsync_counts),
            fsync_us_sum=self._fsync_us_sum,
            write_errors=self._write_errors,
            rotations=self._rotations,
            recoveries=self._recoveries,
            last_seq=self._tip.seq,
            last_error=self._last_error,
            broken=self._broken is not None,
        )

    def files(self) -> list[Path]:
        return chain_files(self.path)

    def _close_fds(self) -> None:
        for name in ("_fd", "_head_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    def close(self) -> None:
        if self._fd < 0 and self._lock_fd < 0:
            return
        try:
            if self._broken is None and self._head_fd >= 0:
                self._sync_head()
        except OSError:
            pass
        finally:
            self._close_fds()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalAuditSink:
    """``AuditSink`` for the stdio wrapper: writes in-process, same durability.

    ``record`` blocks the event loop for one write and fdatasync (tens to
    hundreds of microseconds): the wrapper serves one agent, whose call could
    not proceed before that fsync anyway, and this keeps the pure audit
    package free of asyncio.
    """

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    async def record(self, event: AuditEvent) -> int:
        return self.log.append_batch((event,))[0]

    @property
    def ready(self) -> bool:
        return self.log.broken is None

    def close(self) -> None:
        self.log.close()


__all__ = [
    "BATCH_BUCKETS",
    "FSYNC_BUCKETS_US",
    "AuditLog",
    "HeadSealer",
    "LocalAuditSink",
    "LogStats",
]
