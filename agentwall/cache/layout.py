"""Binary layout of the two shared-memory regions, shared by both backends.

The native backend (``native/shmcache/shmcache.c``, built as
``agentwall.cache._shmcache``) and the pure-Python fallback
(``agentwall.cache._pyshm``) read and write exactly these offsets; the C file
repeats them and ``tests/cache`` checks that both agree.  A region records which
backend formatted it (``impl``) because the two synchronise differently
(seqlocks and CAS versus byte-range locks): a region is only ever used by the
backend that created it, and attaching the other one raises.

Decision table (``TABLE_MAGIC``)::

    header, 64 bytes
      0  magic     8s   b"AWDCACHE"
      8  version   u32
     12  impl      u32  1 = native, 2 = python
     16  n_slots   u64
     24  slot_size u32  multiple of 64, 128..4096; value capacity = slot_size - 48
     28  window    u32  probe window: a key lives in [home, home + window)
     32  torn      u64  reads whose checksum failed after a consistent seqlock read
     40  busy      u64  operations that gave up on a slot held by a writer
    slot i at 64 + i * slot_size
      0  seq       u64  seqlock: odd while a writer holds the slot, 0 = never used
      8  touched   u64  caller's clock at the last insert or hit (eviction order)
     16  key       16s
     32  length    u32
     36  flags     u32  1 = holds an entry
     40  check     u64  checksum over key, length and value
     48  value     slot_size - 48 bytes

Rate-limit buckets (``BUCKET_MAGIC``)::

    header, 64 bytes
      0  magic     8s   b"AWRLIMIT"
      8  version   u32
     12  impl      u32
     16  n_buckets u64
     24  window    u32
     32  full      u64  takes refused because every bucket in the window was busy
     40  busy      u64  takes that gave up after too many CAS retries
    bucket i at 64 + i * 64
      0  state     u64  generation << 2 | kind (0 empty, 1 claiming, 2 ready)
      8  key       u64  non-zero bucket key
     16  word      u64  tokens (Q20.12 fixed point) << 32 | refill tick (u32)
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Final

TABLE_MAGIC: Final = b"AWDCACHE"
BUCKET_MAGIC: Final = b"AWRLIMIT"
VERSION: Final = 1
IMPL_NATIVE: Final = 1
IMPL_PYTHON: Final = 2

HEADER_SIZE: Final = 64
SLOT_META: Final = 48
MAX_SLOT_SIZE: Final = 4096
KEY_SIZE: Final = 16
BUCKET_SIZE: Final = 64

TABLE_HEADER = struct.Struct("<8sIIQII")
BUCKET_HEADER = struct.Struct("<8sIIQI")

# Slot field offsets.
SLOT_SEQ: Final = 0
SLOT_TOUCHED: Final = 8
SLOT_KEY: Final = 16
SLOT_LEN: Final = 32
SLOT_FLAGS: Final = 36
SLOT_CHECK: Final = 40

# Bucket state kinds.
BUCKET_EMPTY: Final = 0
BUCKET_CLAIMING: Final = 1
BUCKET_READY: Final = 2

# Token fixed point: 12 fractional bits in a 32-bit field.  Capacity is
# therefore below 2**20 tokens; a burst above that is clamped.
TOKEN_FRAC_BITS: Final = 12
TOKEN_ONE: Final = 1 << TOKEN_FRAC_BITS
MAX_TOKEN_UNITS: Final = (1 << 32) - 1
# The refill clock counts ticks of 2**20 ns (about 1.05 ms) in 32 bits, which
# wraps every ~52 days; differences are taken modulo 2**32 (see take()).
TICK_SHIFT: Final = 20
# Rates are stored as token units per tick scaled by 2**32.
RATE_SHIFT: Final = 32

DEFAULT_WINDOW: Final = 8


class LayoutError(ValueError):
    """A region whose header does not describe a table this backend can use."""


def table_bytes(n_slots: int, slot_size: int) -> int:
    return HEADER_SIZE + n_slots * slot_size


def bucket_bytes(n_buckets: int) -> int:
    return HEADER_SIZE + n_buckets * BUCKET_SIZE


def check_table_geometry(n_slots: int, slot_size: int, window: int) -> None:
    if slot_size < 128 or slot_size % 64 or slot_size > MAX_SLOT_SIZE:
        raise LayoutError(f"slot_size must be a multiple of 64 in 128..4096, not {slot_size}")
    if not 1 <= window <= 64:
        raise LayoutError(f"window must be 1..64, not {window}")
    if n_slots < window:
        raise LayoutError(f"need at least {window} slots, not {n_slots}")


def format_table(buf: mmap.mmap, impl: int, n_slots: int, slot_size: int, window: int) -> None:
    """Write the header of a fresh (zero-filled) table region."""
    check_table_geometry(n_slots, slot_size, window)
    if len(buf) < table_bytes(n_slots, slot_size):
        raise LayoutError("region too small for the table")
    TABLE_HEADER.pack_into(buf, 0, TABLE_MAGIC, VERSION, impl, n_slots, slot_size, window)


def format_buckets(buf: mmap.mmap, impl: int, n_buckets: int, window: int) -> None:
    if not 1 <= window <= 64 or n_buckets < window:
        raise LayoutError(f"bad bucket geometry: {n_buckets} buckets, window {window}")
    if len(buf) < bucket_bytes(n_buckets):
        raise LayoutError("region too small for the buckets")
    BUCKET_HEADER.pack_into(buf, 0, BUCKET_MAGIC, VERSION, impl, n_buckets, window)


class Region:
    """A shared, anonymous memory region (memfd) mapped read-write.

    Created before the workers fork, so every process of the pool inherits the
    same mapping; ``fd`` stays open because the Python backend takes its
    byte-range locks on it (and it could be passed to another process with
    SCM_RIGHTS).
    """

    __slots__ = ("fd", "map", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.map = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)

    @classmethod
    def create(cls, name: str, size: int) -> Region:
        # Rounded to whole pages so the mapping covers the file exactly.
        size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            return cls(fd, size)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        """Unmaps and closes.  Fails (BufferError) while a backend object still
        holds the buffer; drop those first."""
        if not self.map.closed:
            self.map.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
