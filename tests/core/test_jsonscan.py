"""The one-pass C byte counts (native/jsonscan/jsonscan.c) against their
Python reference.

jsonrpc.parse settles its depth limit and its duplicate-key check from these
counts for nearly every message; a difference between the two would let the
same bytes be refused with the extension and forwarded without it (or the
reverse), so they must agree on every input.
"""

from __future__ import annotations

import tracemalloc
from types import ModuleType

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agentwall.core import jsonrpc
from agentwall.core.jsonrpc import syntax_counts_py

# The bytes the counts tell apart, and their near neighbours.
_PIECES = st.sampled_from(
    [b"[", b"{", b"]", b"}", b":", b"\\", b"\\u003", b"\\u003a", b"\\u003A", b"u003",
     b'"', b"a", b"\x00", b"\xff", b"\\\\u003"]
)  # fmt: skip


@pytest.fixture(scope="module")
def native(native_jsonscan: ModuleType) -> ModuleType:
    return native_jsonscan


@settings(max_examples=500)
@given(st.lists(_PIECES | st.binary(max_size=8), max_size=60).map(b"".join))
@example(b"")
@example(b"\\u003")
@example(b"\\u00")
@example(b"x\\u003")
def test_native_and_python_counts_agree(native: ModuleType, data: bytes) -> None:
    assert native.syntax_counts(data) == syntax_counts_py(data)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_they_agree_on_arbitrary_bytes(native: ModuleType, data: bytes) -> None:
    assert native.syntax_counts(data) == syntax_counts_py(data)


def test_what_the_counts_are(native: ModuleType) -> None:
    data = b'{"a":[1,{"b:c":"\\u003a"}]}'
    assert native.syntax_counts(data) == (3, 3, True)
    assert native.syntax_counts(b"") == (0, 0, False)


def test_counts_past_the_chunk_size(native: ModuleType) -> None:
    """The C loop sums in 32-bit lanes flushed every MiB: a long run of one
    byte must not wrap or drop a partial chunk."""
    size = (1 << 20) * 3 + 12345
    for data in (b":" * size, b"[" * size, b"{" * size, b"a" * size + b"\\u003"):
        assert native.syntax_counts(data) == syntax_counts_py(data)


def test_any_bytes_like_is_read_and_nothing_else(native: ModuleType) -> None:
    for data in (bytearray(b"[:"), memoryview(b"x[:{")):
        assert native.syntax_counts(data) == syntax_counts_py(bytes(data))
    with pytest.raises(TypeError):
        native.syntax_counts("[:")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        syntax_counts_py("[:")  # type: ignore[arg-type]


def test_parse_uses_the_native_counts_when_built(native: ModuleType) -> None:
    assert jsonrpc.syntax_counts is native.syntax_counts
    assert jsonrpc.counts_named("python") is syntax_counts_py
    with pytest.raises(ValueError, match="no syntax count"):
        jsonrpc.counts_named("rust")


def test_no_memory_is_kept_per_call(native: ModuleType) -> None:
    data = b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":"\\u003a"}}' * 50
    for _ in range(100):
        native.syntax_counts(data)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(10_000):
            native.syntax_counts(data)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 4096
