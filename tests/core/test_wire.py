from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentwall.errors import FrameError
from agentwall.ipc.wire import HEADER, MAX_FRAME, FrameDecoder, encode_frame


@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(min_value=1, max_value=17))
def test_any_split_yields_the_same_frames(payloads: list[bytes], step: int) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    dec = FrameDecoder()
    got: list[bytes] = []
    for i in range(0, len(stream), step):
        got += dec.feed(stream[i : i + step])
    assert got == payloads
    assert dec.pending == 0


def test_oversize_length_is_a_frame_error() -> None:
    with pytest.raises(FrameError):
        FrameDecoder().feed(HEADER.pack(MAX_FRAME + 1))
