"""Pure-Python backend: the same tables as the C extension, with locks.

Python cannot do atomic compare-and-swap on shared memory, so this backend
serialises with POSIX byte-range locks (``fcntl.lockf``) on the region's file
descriptor.  Every key has a probe window ``[home, home + window)`` that never
wraps, and an operation locks exactly that range of the lock space (shared for
lookups, exclusive for inserts and takes), so keys whose windows do not
overlap never contend.  POSIX record locks belong to a process, not a thread,
so a per-object ``threading.Lock`` serialises the threads of one process.

A process killed while it holds a lock loses the lock with its life, so a
half-written slot is possible: writers mark the slot's seqlock odd while they
write, readers skip odd slots, and the next writer (which holds the lock, so
knows nobody is mid-write) reuses them.  A checksum (CRC-32) guards each value
as well.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
import zlib
from typing import Final

from agentwall.cache import layout, tokens
from agentwall.cache.layout import LayoutError

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
# key, length, flags, check (offsets 16..48 of a slot)
_SLOT_BODY = struct.Struct("<16sIIQ")
_BUCKET = struct.Struct("<QQQ")
_M64: Final = (1 << 64) - 1
_ALL_LOCKS: Final = 0  # lockf length 0 = to the end of the lock space


def _checksum(key: bytes, value: bytes) -> int:
    return zlib.crc32(value, zlib.crc32(key)) | (len(value) << 32)


def _home(key64: int, n: int, window: int) -> int:
    return key64 % (n - window + 1)


class _RangeLock:
    """Process-wide and cross-process exclusion over a range of the lock space."""

    __slots__ = ("_fd", "_thread_lock")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._thread_lock = threading.Lock()
        os.register_at_fork(after_in_child=self._reset_after_fork)

    def _reset_after_fork(self) -> None:
        # A thread that held the lock at fork time does not exist in the child.
        self._thread_lock = threading.Lock()

    def acquire(self, exclusive: bool, start: int, length: int) -> None:
        self._thread_lock.acquire()
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH, length, start)
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self, start: int, length: int) -> None:
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, length, start)
        finally:
            self._thread_lock.release()


class Table:
    """Fixed-slot open-addressing table of 16-byte keys to byte values."""

    impl: Final = layout.IMPL_PYTHON

    def __init__(self, buf: mmap.mmap, fd: int) -> None:
        magic, version, impl, n_slots, slot_size, window = layout.TABLE_HEADER.unpack_from(buf, 0)
        if magic != layout.TABLE_MAGIC or version != layout.VERSION:
            raise LayoutError("not an AgentWall decision table")
        if impl != layout.IMPL_PYTHON:
            raise LayoutError(f"table was formatted for backend {impl}, not the Python one")
        layout.check_table_geometry(n_slots, slot_size, window)
        if len(buf) < layout.table_bytes(n_slots, slot_size):
            raise LayoutError("region smaller than its header says")
        self._buf = buf
        self._lock = _RangeLock(fd)
        self.n_slots: int = n_slots
        self.slot_size: int = slot_size
        self.window: int = window
        self.value_capacity: int = slot_size - layout.SLOT_META

    def _slot(self, index: int) -> int:
        return layout.HEADER_SIZE + index * self.slot_size

    def lookup(self, key: bytes, now: int) -> bytes | None:
        if len(key) != layout.KEY_SIZE:
            raise ValueError("key must be 16 bytes")
        home = _home(int.from_bytes(key[:8], "little"), self.n_slots, self.window)
        buf = self._buf
        self._lock.acquire(False, home, self.window)
        try:
            for index in range(home, home + self.window):
                base = self._slot(index)
                (seq,) = _U64.unpack_from(buf, base)
                if seq == 0:
                    return None
                if seq & 1:
                    continue  # a writer died mid-write; the next insert reuses it
                slot_key, length, flags, check = _SLOT_BODY.unpack_from(buf, base + 16)
                if not flags:
                    return None
                if slot_key != key:
                    continue
                if length > self.value_capacity:
                    return None
                start = base + layout.SLOT_META
                value = buf[start : start + length]
                if _checksum(key, value) != check:
                    return None
                _U64.pack_into(buf, base + layout.SLOT_TOUCHED, now & _M64)
                return value
            return None
        finally:
            self._lock.release(home, self.window)

    def insert(self, key: bytes, value: bytes, now: int) -> int:
        """0 = not stored (too large), 1 = stored, 2 = stored by evicting another key."""
        if len(key) != layout.KEY_SIZE:
            raise ValueError("key must be 16 bytes")
        if len(value) > self.value_capacity:
            return 0
        home = _home(int.from_bytes(key[:8], "little"), self.n_slots, self.window)
        buf = self._buf
        self._lock.acquire(True, home, self.window)
        try:
            target = -1
            evicting = False
            oldest = -1
            oldest_touched = _M64 + 1
            for index in range(home, home + self.window):
                base = self._slot(index)
                (seq,) = _U64.unpack_from(buf, base)
                if seq == 0 or seq & 1:
                    target = index
                    break
                slot_key, _length, flags, _check = _SLOT_BODY.unpack_from(buf, base + 16)
                if not flags or slot_key == key:
                    target = index
                    break
                (touched,) = _U64.unpack_from(buf, base + layout.SLOT_TOUCHED)
                if touched < oldest_touched:
                    oldest, oldest_touched = index, touched
            if target < 0:
                target, evicting = oldest, True
            base = self._slot(target)
            (seq,) = _U64.unpack_from(buf, base)
            seq |= 1
            _U64.pack_into(buf, base, seq)
            start = base + layout.SLOT_META
            buf[start : start + len(value)] = value
            _SLOT_BODY.pack_into(buf, base + 16, key, len(value), 1, _checksum(key, value))
            _U64.pack_into(buf, base + layout.SLOT_TOUCHED, now & _M64)
            _U64.pack_into(buf, base, (seq + 1) & _M64)
            return 2 if evicting else 1
        finally:
            self._lock.release(home, self.window)

    def clear(self) -> None:
        buf = self._buf
        self._lock.acquire(True, 0, _ALL_LOCKS)
        try:
            for index in range(self.n_slots):
                base = self._slot(index)
                (seq,) = _U64.unpack_from(buf, base)
                if seq:
                    _U32.pack_into(buf, base + layout.SLOT_FLAGS, 0)
                    _U64.pack_into(buf, base, (seq | 1) + 1)
        finally:
            self._lock.release(0, _ALL_LOCKS)

    def stats(self) -> dict[str, int]:
        torn, busy = struct.unpack_from("<QQ", self._buf, 32)
        return {"torn": torn, "busy": busy}


class Buckets:
    """Token buckets keyed by non-zero 64-bit keys (see ``agentwall.cache.tokens``)."""

    impl: Final = layout.IMPL_PYTHON

    def __init__(self, buf: mmap.mmap, fd: int) -> None:
        magic, version, impl, n_buckets, window = layout.BUCKET_HEADER.unpack_from(buf, 0)
        if magic != layout.BUCKET_MAGIC or version != layout.VERSION:
            raise LayoutError("not an AgentWall bucket table")
        if impl != layout.IMPL_PYTHON:
            raise LayoutError(f"buckets were formatted for backend {impl}, not the Python one")
        if len(buf) < layout.bucket_bytes(n_buckets) or not 1 <= window <= n_buckets:
            raise LayoutError("bad bucket region")
        self._buf = buf
        self._lock = _RangeLock(fd)
        self.n_buckets: int = n_buckets
        self.window: int = window
        self._full = 0

    def take(
        self, key: int, rate_q: int, capacity: int, cost: int, now_ns: int, reclaim_ticks: int
    ) -> int:
        """0 when allowed, otherwise the nanoseconds to wait before a retry can
        succeed (a hint, at least 1)."""
        if not 0 < key <= _M64:
            raise ValueError("bucket key must be a non-zero u64")
        tick = tokens.now_tick(now_ns)
        home = _home(key, self.n_buckets, self.window)
        buf = self._buf
        self._lock.acquire(True, home, self.window)
        try:
            found = -1
            free = -1
            victim = -1
            victim_idle = -1
            for index in range(home, home + self.window):
                base = layout.HEADER_SIZE + index * layout.BUCKET_SIZE
                state, slot_key, word = _BUCKET.unpack_from(buf, base)
                kind = state & 3
                if kind == layout.BUCKET_READY:
                    if slot_key == key:
                        found = index
                        break
                    idle = tokens.idle_ticks(word, tick)
                    if idle >= reclaim_ticks and idle > victim_idle:
                        victim, victim_idle = index, idle
                elif free < 0:
                    # EMPTY, or CLAIMING by a process that died holding the lock.
                    free = index
                    if kind == layout.BUCKET_EMPTY:
                        break
            if found < 0:
                found = free if free >= 0 else victim
                if found < 0:
                    self._full += 1
                    return 1_000_000_000
                base = layout.HEADER_SIZE + found * layout.BUCKET_SIZE
                (state,) = _U64.unpack_from(buf, base)
                generation = (state >> 2) + 1
                _U64.pack_into(buf, base, (generation << 2 | layout.BUCKET_CLAIMING) & _M64)
                _BUCKET.pack_into(
                    buf,
                    base,
                    (generation << 2 | layout.BUCKET_CLAIMING) & _M64,
                    key,
                    tokens.pack(capacity, tick),
                )
                _U64.pack_into(buf, base, (generation << 2 | layout.BUCKET_READY) & _M64)
            base = layout.HEADER_SIZE + found * layout.BUCKET_SIZE
            (word,) = _U64.unpack_from(buf, base + 16)
            new_word, retry_ticks = tokens.refill_take(word, tick, rate_q, capacity, cost)
            if retry_ticks:
                return retry_ticks << layout.TICK_SHIFT
            _U64.pack_into(buf, base + 16, new_word)
            return 0
        finally:
            self._lock.release(home, self.window)

    def peek(self, key: int) -> int | None:
        """The bucket's raw word, or None (for tests and diagnostics)."""
        home = _home(key, self.n_buckets, self.window)
        self._lock.acquire(False, home, self.window)
        try:
            for index in range(home, home + self.window):
                base = layout.HEADER_SIZE + index * layout.BUCKET_SIZE
                state, slot_key, word = _BUCKET.unpack_from(self._buf, base)
                if state & 3 == layout.BUCKET_READY and slot_key == key:
                    return int(word)
            return None
        finally:
            self._lock.release(home, self.window)

    def stats(self) -> dict[str, int]:
        full, busy = struct.unpack_from("<QQ", self._buf, 32)
        return {"full": full + self._full, "busy": busy}
