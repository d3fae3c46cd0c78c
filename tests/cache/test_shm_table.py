"""The decision table, identically for both backends."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentwall.cache import _pyshm, layout
from agentwall.cache.backend import get_backend
from agentwall.cache.layout import LayoutError
from agentwall.cache.shm import SharedTable


def key(n: int) -> bytes:
    return hashlib.blake2b(n.to_bytes(8, "little"), digest_size=16).digest()


def colliding_keys(count: int, slots: int, window: int) -> list[bytes]:
    """Keys whose home slot is the same, to fill one probe window."""
    homes = slots - window + 1
    found: list[bytes] = []
    n = 0
    while len(found) < count:
        k = key(n)
        if int.from_bytes(k[:8], "little") % homes == 0:
            found.append(k)
        n += 1
    return found


@pytest.fixture
def table(backend: str) -> SharedTable:
    return SharedTable.create(slots=64, slot_size=128, window=4, backend=backend)  # type: ignore[arg-type]


def test_miss_insert_hit_overwrite(table: SharedTable) -> None:
    t = table.table
    assert t.lookup(key(1), 0) is None
    assert t.insert(key(1), b"one", 1) == 1
    assert t.lookup(key(1), 2) == b"one"
    assert t.insert(key(1), b"uno", 3) == 1
    assert t.lookup(key(1), 4) == b"uno"
    assert t.lookup(key(2), 5) is None


def test_empty_value_is_a_value(table: SharedTable) -> None:
    assert table.table.insert(key(7), b"", 1) == 1
    assert table.table.lookup(key(7), 2) == b""


def test_too_large_is_not_stored(table: SharedTable) -> None:
    t = table.table
    assert t.value_capacity == 128 - layout.SLOT_META
    assert t.insert(key(1), b"x" * (t.value_capacity + 1), 1) == 0
    assert t.lookup(key(1), 2) is None
    assert t.insert(key(1), b"x" * t.value_capacity, 1) == 1
    assert t.lookup(key(1), 2) == b"x" * t.value_capacity


def test_full_window_evicts_least_recently_touched(table: SharedTable) -> None:
    t = table.table
    ks = colliding_keys(5, t.n_slots, t.window)
    for i, k in enumerate(ks[:4]):
        assert t.insert(k, b"v%d" % i, 10 + i) == 1
    # Touch the oldest so the second-oldest becomes the victim.
    assert t.lookup(ks[0], 100) == b"v0"
    assert t.insert(ks[4], b"v4", 101) == 2
    assert t.lookup(ks[1], 102) is None
    for i in (0, 2, 3, 4):
        assert t.lookup(ks[i], 103) == b"v%d" % i


def test_clear_empties_and_table_is_reusable(table: SharedTable) -> None:
    t = table.table
    for n in range(20):
        t.insert(key(n), b"%d" % n, n)
    t.clear()
    assert all(t.lookup(key(n), 50) is None for n in range(20))
    t.insert(key(3), b"again", 60)
    assert t.lookup(key(3), 61) == b"again"


def test_key_must_be_16_bytes(table: SharedTable) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        table.table.lookup(b"short", 0)
    with pytest.raises(ValueError, match="16 bytes"):
        table.table.insert(b"x" * 17, b"v", 0)


def test_region_formatted_for_one_backend_refuses_the_other(backend: str) -> None:
    other = "python" if backend == "native" else "native"
    shared = SharedTable.create(slots=16, slot_size=128, window=4, backend=backend)  # type: ignore[arg-type]
    with pytest.raises((LayoutError, ValueError), match="backend"):
        get_backend(other).table(shared.region.map, shared.region.fd)  # type: ignore[arg-type]


def test_unformatted_region_is_refused(backend: str) -> None:
    region = layout.Region.create("t", 4096)
    with pytest.raises((LayoutError, ValueError), match=r"formatted|AgentWall"):
        get_backend(backend).table(region.map, region.fd)  # type: ignore[arg-type]


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(LayoutError):
        SharedTable.create(slots=4, slot_size=128, window=8)
    with pytest.raises(LayoutError):
        SharedTable.create(slots=64, slot_size=100)
    with pytest.raises(LayoutError):
        SharedTable.create(slots=64, slot_size=8192)


def test_python_reader_skips_a_slot_left_mid_write() -> None:
    """A writer killed between marking the slot odd and finishing leaves the
    slot unreadable, not half-read; the next insert reuses it."""
    shared = SharedTable.create(slots=16, slot_size=128, window=4, backend="python")
    t = shared.table
    assert isinstance(t, _pyshm.Table)
    t.insert(key(1), b"value", 1)
    home = int.from_bytes(key(1)[:8], "little") % (16 - 4 + 1)
    base = layout.HEADER_SIZE + home * 128
    (seq,) = struct.unpack_from("<Q", shared.region.map, base)
    struct.pack_into("<Q", shared.region.map, base, seq | 1)
    assert t.lookup(key(1), 2) is None
    assert t.insert(key(1), b"fresh", 3) == 1
    assert t.lookup(key(1), 4) == b"fresh"


ops = st.lists(
    st.tuples(
        st.sampled_from(["insert", "lookup", "clear"]),
        st.integers(0, 40),
        st.binary(max_size=90),
    ),
    max_size=120,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_both_backends_behave_identically(
    native_backend: str, sequence: list[tuple[str, int, bytes]]
) -> None:
    """Same operations, same answers: eviction and probing are deterministic and
    shared by the two implementations.  Also checks every hit against a model:
    a hit is always the last value stored for that key."""
    tables = [
        SharedTable.create(slots=24, slot_size=128, window=4, backend=name)  # type: ignore[arg-type]
        for name in ("python", native_backend)
    ]
    model: dict[int, bytes] = {}
    for now, (op, k, value) in enumerate(sequence):
        results = []
        for shared in tables:
            t = shared.table
            if op == "insert":
                results.append(t.insert(key(k), value, now))
            elif op == "lookup":
                results.append(t.lookup(key(k), now))
            else:
                t.clear()
                results.append(None)
        assert results[0] == results[1], (op, k)
        if op == "insert" and results[0]:
            model[k] = value
        elif op == "lookup" and results[0] is not None:
            assert results[0] == model[k]
        elif op == "clear":
            model.clear()
