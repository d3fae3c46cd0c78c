"""The shared-memory decision cache.

``DecisionCache.create(...)`` maps one region that every process forked
afterwards shares (the evaluator pool creates it before it forks anything).
Whichever process evaluates a call can then answer the same call from any other
process without asking a worker.

What is cached, and what is not:

* only decisions with ``Decision.cacheable`` set (the evaluator clears it for
  anything that depended on state or time; the pool never caches its own
  failure decisions: timeouts, dead workers, overload);
* the key (``agentwall.cache.key.decision_key``) covers the policy hash, the
  identity class, origin/kind/transport, method, target and canonical arguments,
  so a policy reload invalidates without a flush: old entries simply stop being
  asked for and age out;
* the value is the msgpack encoding of the Decision; one that does not fit a
  slot is not cached (counted as ``too_large``);
* a hit comes back with ``cached=True`` and the current call's ``call_id``.
  **A hit skips the evaluator, never the audit entry**: the caller records the
  decision exactly as for a miss (with ``cached=True``).
* rate-limit state is never here (``agentwall.cache.ratelimit``).

Memory is bounded: ``slots * slot_size`` bytes plus a 64-byte header, fixed at
creation.  Eviction: a key may live in any of the ``window`` slots after its
home slot; an insert reuses the key's own slot, else the first free one, else
evicts the slot in the window with the oldest ``touched`` stamp (the caller's
clock at its last insert or hit), which approximates least-recently-used within
the window.  Slots whose writer died mid-write are skipped by readers.

``enabled = False`` switches the cache off: every lookup misses and nothing is
stored (the region stays mapped, so it can be switched back on).
"""

from __future__ import annotations

import msgspec

from agentwall.cache import layout
from agentwall.cache.backend import BackendName, TableLike, get_backend
from agentwall.cache.key import decision_key
from agentwall.cache.layout import Region
from agentwall.cache.shm_records import (  # re-exported: importers use shm.<Name>
    CacheStats as CacheStats,
)
from agentwall.types import Call, Decision

DEFAULT_SLOTS = 16384
DEFAULT_SLOT_SIZE = 512


class SharedTable:
    """A formatted table region plus the backend object that operates on it."""

    __slots__ = ("backend", "region", "table")

    def __init__(self, region: Region, table: TableLike, backend: str) -> None:
        self.region = region
        self.table = table
        self.backend = backend

    @classmethod
    def create(
        cls,
        *,
        slots: int,
        slot_size: int,
        window: int = layout.DEFAULT_WINDOW,
        backend: BackendName = "auto",
        name: str = "agentwall-decisions",
    ) -> SharedTable:
        chosen = get_backend(backend)
        layout.check_table_geometry(slots, slot_size, window)
        region = Region.create(name, layout.table_bytes(slots, slot_size))
        try:
            layout.format_table(region.map, chosen.impl, slots, slot_size, window)
            table = chosen.table(region.map, region.fd)
        except BaseException:
            region.close()
            raise
        return cls(region, table, chosen.name)

    def close(self) -> None:
        del self.table
        self.region.close()


class DecisionCache:
    """Cacheable decisions, shared by every process forked after ``create``."""

    def __init__(self, shared: SharedTable, *, enabled: bool = True) -> None:
        self._shared = shared
        self._table = shared.table
        self.enabled = enabled
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(Decision)
        self.hits = 0
        self.misses = 0
        self.stores = 0
        self.evictions = 0
        self.too_large = 0
        self.uncacheable = 0
        self.undecodable = 0

    @classmethod
    def create(
        cls,
        *,
        slots: int = DEFAULT_SLOTS,
        slot_size: int = DEFAULT_SLOT_SIZE,
        window: int = layout.DEFAULT_WINDOW,
        backend: BackendName = "auto",
        enabled: bool = True,
    ) -> DecisionCache:
        shared = SharedTable.create(
            slots=slots, slot_size=slot_size, window=window, backend=backend
        )
        return cls(shared, enabled=enabled)

    @property
    def backend(self) -> str:
        return self._shared.backend

    @property
    def memory_bytes(self) -> int:
        return self._shared.region.size

    @staticmethod
    def key(policy_hash: str, call: Call) -> bytes:
        return decision_key(policy_hash, call)

    def get(self, key: bytes, policy_hash: str, call_id: str, now_ns: int) -> Decision | None:
        """The cached decision for ``key``, re-labelled for this call, or None."""
        if not self.enabled:
            return None
        raw = self._table.lookup(key, now_ns)
        if raw is None:
            self.misses += 1
            return None
        try:
            decision = self._decoder.decode(raw)
        except msgspec.DecodeError:
            self.undecodable += 1
            self.misses += 1
            return None
        if decision.policy_hash != policy_hash:
            # Cannot happen short of a 128-bit collision; never trust it.
            self.misses += 1
            return None
        self.hits += 1
        return msgspec.structs.replace(decision, call_id=call_id, cached=True, durable=False)

    def put(self, key: bytes, decision: Decision, now_ns: int) -> bool:
        """Stores a cacheable decision; returns whether it was stored."""
        if not self.enabled:
            return False
        if not decision.cacheable or decision.cached:
            self.uncacheable += 1
            return False
        # A hit is a new call whose entry nobody has written yet: never durable.
        value = self._encoder.encode(msgspec.structs.replace(decision, call_id="", durable=False))
        outcome = self._table.insert(key, value, now_ns)
        if outcome == 0:
            self.too_large += len(value) > self._table.value_capacity
            return False
        self.stores += 1
        self.evictions += outcome == 2
        return True

    def lookup(self, policy_hash: str, call: Call, now_ns: int) -> Decision | None:
        return self.get(decision_key(policy_hash, call), policy_hash, call.call_id, now_ns)

    def store(self, policy_hash: str, call: Call, decision: Decision, now_ns: int) -> bool:
        if decision.policy_hash != policy_hash:
            self.uncacheable += 1
            return False
        return self.put(decision_key(policy_hash, call), decision, now_ns)

    def clear(self) -> None:
        self._table.clear()

    def stats(self) -> CacheStats:
        shared = self._table.stats()
        return CacheStats(
            enabled=self.enabled,
            backend=self.backend,
            slots=self._table.n_slots,
            slot_size=self._table.slot_size,
            memory_bytes=self.memory_bytes,
            hits=self.hits,
            misses=self.misses,
            stores=self.stores,
            evictions=self.evictions,
            too_large=self.too_large,
            uncacheable=self.uncacheable,
            undecodable=self.undecodable,
            torn=shared.get("torn", 0),
            busy=shared.get("busy", 0),
        )

    def close(self) -> None:
        del self._table
        self._shared.close()
