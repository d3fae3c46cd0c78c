"""Group commit, sans-IO: which waiting appends go into the next fsync.

The writer process feeds every append request it reads (``offer``), asks
whether a commit is due, and ``take``s a batch.  One fdatasync then covers the
whole batch, which is what makes an fsync per decision affordable: while one
batch syncs, the next one gathers.

Policy: commit as soon as anything waits (``max_delay_ns=0``, the default),
because the first caller should never wait for company.  A batch holds at most
``max_entries`` entries and ``max_bytes`` bytes so one commit stays bounded,
except that a single request larger than that still goes, alone (requests are
acknowledged whole, never split).  Order is first-in first-out.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommitBatcher(Generic[T]):
    __slots__ = ("_bytes", "_entries", "_queue", "max_bytes", "max_delay_ns", "max_entries")

    def __init__(
        self, *, max_entries: int = 4096, max_bytes: int = 8 << 20, max_delay_ns: int = 0
    ) -> None:
        if max_entries < 1 or max_bytes < 1 or max_delay_ns < 0:
            raise ValueError("batch limits must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_delay_ns = max_delay_ns
        # (item, entries, bytes, offered_at)
        self._queue: deque[tuple[T, int, int, int]] = deque()
        self._entries = 0
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def pending_entries(self) -> int:
        return self._entries

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def offer(self, item: T, *, entries: int, nbytes: int, now_ns: int) -> None:
        self._queue.append((item, entries, nbytes, now_ns))
        self._entries += entries
        self._bytes += nbytes

    def deadline_ns(self) -> int | None:
        """When the oldest waiting request becomes due, or None when idle."""
        if not self._queue:
            return None
        return self._queue[0][3] + self.max_delay_ns

    def due(self, now_ns: int) -> bool:
        if not self._queue:
            return False
        if self._entries >= self.max_entries or self._bytes >= self.max_bytes:
            return True
        return now_ns >= self._queue[0][3] + self.max_delay_ns

    def take(self) -> list[T]:
        """The next batch, oldest first; empty only when nothing waits."""
        out: list[T] = []
        queue = self._queue
        entries = 0
        nbytes = 0
        while queue:
            item, n, b, _ = queue[0]
            if out and (entries + n > self.max_entries or nbytes + b > self.max_bytes):
                break
            queue.popleft()
            out.append(item)
            entries += n
            nbytes += b
        self._entries -= entries
        self._bytes -= nbytes
        return out


__all__ = ["GroupCommitBatcher"]
