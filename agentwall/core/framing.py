"""Newline-delimited JSON framing for stdio, sans-IO.

MCP's stdio transport puts one JSON-RPC message per line.  The framer cuts a
byte stream into lines without ever holding more than ``max_line`` bytes of an
unfinished line: a line that grows past the limit is reported once, as soon as
it crosses it, and the rest of it is skipped up to its newline.  A line left
unfinished at end of input is reported rather than silently dropped.

Blank lines (only whitespace) carry no message and are skipped.  A trailing
``\\r`` is left in place: JSON treats it as whitespace.
"""

from __future__ import annotations

import msgspec

DEFAULT_MAX_LINE = 16 * 1024 * 1024


class LineTooLong(msgspec.Struct, frozen=True):
    """A line passed ``limit`` bytes; it is being discarded up to its newline.
    ``head`` is its first ``min(HEAD_BYTES, limit)`` bytes, for diagnostics
    and to find the id of the request it carried."""

    limit: int
    head: bytes = b""


HEAD_BYTES = 256


class TruncatedLine(msgspec.Struct, frozen=True):
    """Input ended in the middle of a line (no newline after ``data``)."""

    data: bytes


FrameItem = bytes | LineTooLong | TruncatedLine


class NdjsonFramer:
    """Feed bytes, get whole lines (without their newline) and error items."""

    __slots__ = ("_buf", "_discarding", "max_line")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self.max_line = max_line
        self._buf = bytearray()
        # True while skipping the remainder of an over-limit line.
        self._discarding = False

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held right now (never above max_line)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[FrameItem]:
        out: list[FrameItem] = []
        start = 0
        end = len(data)
        if self._discarding:
            newline = data.find(b"\n")
            if newline < 0:
                return out
            self._discarding = False
            start = newline + 1
        limit = self.max_line
        buf = self._buf
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                break
            if buf:
                if len(buf) + newline - start > limit:
                    out.append(LineTooLong(limit, _head(buf, data, start, limit)))
                    line = b""
                else:
                    buf += data[start:newline]
                    line = bytes(buf)
                buf.clear()
            elif newline - start > limit:
                out.append(LineTooLong(limit, data[start : start + min(HEAD_BYTES, limit)]))
                line = b""
            else:
                line = data[start:newline]
            if line and not line.isspace():
                out.append(line)
            start = newline + 1
        if start < end:
            if len(buf) + end - start > limit:
                out.append(LineTooLong(limit, _head(buf, data, start, limit)))
                buf.clear()
                self._discarding = True
            else:
                buf += data[start:]
        return out

    def eof(self) -> list[FrameItem]:
        """Call once when input ends; reports an unfinished line, if any."""
        self._discarding = False
        if not self._buf or self._buf.isspace():
            self._buf.clear()
            return []
        data = bytes(self._buf)
        self._buf.clear()
        return [TruncatedLine(data)]


def _head(buf: bytearray, data: bytes, start: int, limit: int) -> bytes:
    # At least limit + 1 bytes of the line exist when it is reported, however
    # it was chunked, so the head is the same for any chunking.
    size = min(HEAD_BYTES, limit)
    if len(buf) >= size:
        return bytes(buf[:size])
    return bytes(buf) + data[start : start + size - len(buf)]
