"""Choosing between the native (C) and the pure-Python shared-memory backend.

Both expose the same two classes with the same methods and semantics:

* ``Table(buffer, fd)``: ``lookup(key16, now) -> bytes | None``,
  ``insert(key16, value, now) -> 0 | 1 | 2``, ``clear()``, ``stats()``;
* ``Buckets(buffer, fd)``: ``take(key, rate_q, capacity, cost, now_ns,
  reclaim_ticks) -> 0 | retry_after_ns``, ``peek(key)``, ``stats()``.

``auto`` takes the native one when it was built, unless the environment says
``AGENTWALL_SHMCACHE=python``.
"""

from __future__ import annotations

import os
from typing import Literal, NamedTuple, Protocol

from agentwall.cache import _pyshm, layout

BackendName = Literal["auto", "native", "python"]


class TableLike(Protocol):
    impl: int
    n_slots: int
    slot_size: int
    window: int
    value_capacity: int

    def lookup(self, key: bytes, now: int, /) -> bytes | None: ...
    def insert(self, key: bytes, value: bytes, now: int, /) -> int: ...
    def clear(self) -> None: ...
    def stats(self) -> dict[str, int]: ...


class BucketsLike(Protocol):
    impl: int
    n_buckets: int
    window: int

    def take(
        self, key: int, rate_q: int, capacity: int, cost: int, now_ns: int, reclaim_ticks: int, /
    ) -> int: ...
    def peek(self, key: int, /) -> int | None: ...
    def stats(self) -> dict[str, int]: ...


class TableFactory(Protocol):
    def __call__(self, buffer: object, fd: int, /) -> TableLike: ...


class BucketsFactory(Protocol):
    def __call__(self, buffer: object, fd: int, /) -> BucketsLike: ...


class Backend(NamedTuple):
    name: Literal["native", "python"]
    impl: int
    table: TableFactory
    buckets: BucketsFactory


def _python() -> Backend:
    return Backend("python", layout.IMPL_PYTHON, _pyshm.Table, _pyshm.Buckets)  # type: ignore[arg-type]


def _native() -> Backend | None:
    try:
        from agentwall.cache import _shmcache
    except ImportError:
        return None
    return Backend("native", layout.IMPL_NATIVE, _shmcache.Table, _shmcache.Buckets)


def native_available() -> bool:
    return _native() is not None


def get_backend(name: BackendName = "auto") -> Backend:
    if name == "python":
        return _python()
    if name == "native":
        native = _native()
        if native is None:
            raise RuntimeError(
                "the native shared-memory backend was not built "
                "(needs a C compiler at install time); use 'python' or 'auto'"
            )
        return native
    if os.environ.get("AGENTWALL_SHMCACHE", "") == "python":
        return _python()
    return _native() or _python()
