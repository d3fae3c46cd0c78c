"""The msgspec Structs of ``agentwall.cache.shm``, kept uncompiled (agentwall/compiled.py)."""

from __future__ import annotations

import msgspec


class CacheStats(msgspec.Struct, frozen=True):
    """This process's view; ``torn`` and ``busy`` are shared across processes."""

    enabled: bool
    backend: str
    slots: int
    slot_size: int
    memory_bytes: int
    hits: int
    misses: int
    stores: int
    evictions: int
    too_large: int
    uncacheable: int
    undecodable: int
    torn: int
    busy: int
