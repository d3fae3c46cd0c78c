"""Length-prefixed frames for every process boundary (pool, audit writer).

A frame is a 4-byte big-endian length followed by that many payload bytes,
normally msgpack from msgspec.  Each channel defines its own tagged-union
message types next to its shell; this module only cuts the byte stream, and is
sans-IO so both blocking and asyncio ends share it.
"""

from __future__ import annotations

import struct

from agentwall.errors import FrameError

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024


def encode_frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise FrameError(f"IPC frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(len(payload)) + payload


class FrameDecoder:
    """Feed bytes, get whole payloads back in order."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= HEADER.size:
            (length,) = HEADER.unpack_from(buf, pos)
            if length > MAX_FRAME:
                raise FrameError(f"IPC frame length {length} exceeds {MAX_FRAME}")
            end = pos + HEADER.size + length
            if end > len(buf):
                break
            out.append(bytes(buf[pos + HEADER.size : end]))
            pos = end
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)
