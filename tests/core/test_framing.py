from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from agentwall.core.framing import FrameItem, LineTooLong, NdjsonFramer, TruncatedLine


def _feed_all(framer: NdjsonFramer, chunks: list[bytes]) -> list[FrameItem]:
    out: list[FrameItem] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out + framer.eof()


def test_lines_split_and_blank_lines_skipped() -> None:
    framer = NdjsonFramer()
    assert framer.feed(b'{"a":1}\n\n  \r\n{"b":2}\r\n{"c"') == [b'{"a":1}', b'{"b":2}\r']
    assert framer.pending == 4
    assert framer.feed(b":3}\n") == [b'{"c":3}']
    assert framer.eof() == []


def test_partial_line_at_eof_is_reported() -> None:
    framer = NdjsonFramer()
    assert framer.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert framer.eof() == [TruncatedLine(b'{"b"')]
    assert framer.eof() == []


def test_whitespace_tail_at_eof_is_not_a_message() -> None:
    framer = NdjsonFramer()
    framer.feed(b"{}\n  \r")
    assert framer.eof() == []


def test_oversize_line_in_one_chunk() -> None:
    framer = NdjsonFramer(max_line=10)
    assert framer.feed(b"0123456789\n01234567890\nok\n") == [
        b"0123456789",
        LineTooLong(10, b"0123456789"),
        b"ok",
    ]


def test_oversize_line_is_never_buffered_whole() -> None:
    framer = NdjsonFramer(max_line=100)
    out = framer.feed(b"x" * 60)
    assert out == []
    out = framer.feed(b"x" * 60)
    assert out == [LineTooLong(100, b"x" * 100)]
    assert framer.pending == 0
    for _ in range(1000):
        assert framer.feed(b"y" * 4096) == []
        assert framer.pending == 0
    # The rest of the long line is skipped; the next line is intact.
    assert framer.feed(b"zzz\nnext\n") == [b"next"]
    assert framer.eof() == []


def test_oversize_line_ending_exactly_at_chunk_boundary() -> None:
    framer = NdjsonFramer(max_line=4)
    assert framer.feed(b"abc") == []
    assert framer.feed(b"de") == [LineTooLong(4, b"abcd")]
    assert framer.feed(b"\nok\n") == [b"ok"]


def test_oversize_completed_from_buffer() -> None:
    framer = NdjsonFramer(max_line=4)
    assert framer.feed(b"abc") == []
    assert framer.feed(b"de\nok\n") == [LineTooLong(4, b"abcd"), b"ok"]


def test_head_of_a_long_line_is_kept_for_diagnostics() -> None:
    framer = NdjsonFramer(max_line=300)
    line = b'{"jsonrpc":"2.0","id":7,"result":"' + b"z" * 1000
    out = framer.feed(line[:200]) + framer.feed(line[200:])
    assert out == [LineTooLong(300, line[:256])]


def test_limit_is_inclusive() -> None:
    framer = NdjsonFramer(max_line=4)
    assert framer.feed(b"ab") == []
    assert framer.feed(b"cd\n") == [b"abcd"]


lines = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=20)


@settings(max_examples=300)
@given(lines, st.booleans(), st.integers(1, 50))
def test_byte_at_a_time_equals_whole_input(
    parts: list[bytes], trailing_newline: bool, max_line: int
) -> None:
    data = b"\n".join(parts) + (b"\n" if trailing_newline else b"")
    whole = _feed_all(NdjsonFramer(max_line), [data])
    single = _feed_all(NdjsonFramer(max_line), [data[i : i + 1] for i in range(len(data))])
    assert single == whole


@settings(max_examples=300)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=10), st.integers(1, 64))
def test_any_chunking_equals_whole_input(data: bytes, cuts: list[int], max_line: int) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    whole = _feed_all(NdjsonFramer(max_line), [data])
    assert _feed_all(NdjsonFramer(max_line), chunks) == whole
    # Every line we hand out is within the limit and has no newline.
    for item in whole:
        if isinstance(item, bytes):
            assert len(item) <= max_line
            assert b"\n" not in item
