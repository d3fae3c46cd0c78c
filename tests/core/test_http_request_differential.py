"""Our HTTP/1.1 request parser against h11, on hostile input.

The front-end parses agents' requests with its own parser (for speed; see
agentwall/core/mcp_http.py).  A hand-written parser in a security boundary is
a request-smuggling risk, so this property pins it to h11: whatever we accept,
h11 accepts too, with the same method, target, headers and body.  Rejecting
more than h11 is allowed; accepting anything h11 refuses is not.

Every test here runs over both head scans, the C one and the Python one.
"""

from __future__ import annotations

from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentwall.core.mcp_http import (
    REQUEST_END,
    HttpRequestError,
    RequestHead,
    RequestParser,
)

pytestmark = pytest.mark.usefixtures("head_scan")

Parsed = tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]


def ours(data: bytes) -> Parsed | None:
    parser = RequestParser()
    parser.feed(data)
    parser.feed_eof()
    head: RequestHead | None = None
    body = b""
    try:
        for _ in range(10_000):
            event = parser.next_event()
            if event is None:
                return None
            if isinstance(event, RequestHead):
                head = event
            elif isinstance(event, bytes):
                body += event
            elif event is REQUEST_END:
                assert head is not None
                return head.method, head.target, list(head.headers), body
            else:
                return None
    except HttpRequestError:
        return None
    return None


def theirs(data: bytes) -> Parsed | None:
    conn = h11.Connection(our_role=h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")
    request: Any = None
    body = b""
    try:
        for _ in range(10_000):
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return None
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                headers = [(bytes(n).lower(), bytes(v)) for n, v in request.headers]
                return bytes(request.method), bytes(request.target), headers, body
            else:
                return None
    except h11.RemoteProtocolError:
        return None
    return None


_NAMES = st.sampled_from(
    [b"Host", b"host", b"Content-Length", b"content-length", b"Transfer-Encoding",
     b"Connection", b"Content-Type", b"Mcp-Session-Id", b"X-A", b"Host ", b" Host",
     b"Content-Length ", b"Transfer-Encoding\t", b"Te", b"Expect", b"Accept"]
)  # fmt: skip
_VALUES = st.sampled_from(
    [b"127.0.0.1", b"5", b"0", b"05", b"+5", b"-1", b"5, 5", b"5,6", b" 5", b"5 ", b"chunked",
     b"Chunked", b"chunked, identity", b"identity", b"gzip, chunked", b"keep-alive", b"close",
     b"100-continue", b"a\tb", b"x\x00y", b"x\ry", b"x\ny", b"", b"\xff", b"application/json"]
)  # fmt: skip
_SEPS = st.sampled_from([b"\r\n", b"\n", b"\r\n ", b"\r\n\t", b"\r"])
_BODIES = st.sampled_from(
    [b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"5\r\nhello\r\n0\r\nX: y\r\n\r\n",
     b"5;ext=1\r\nhello\r\n0\r\n\r\n", b"0x5\r\nhello\r\n0\r\n\r\n", b"hello\r\n",
     b"5\nhello\n0\n\n", b"fffffffffffffffff\r\n"]
)  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """A valid request, then zero to three hostile mutations of it."""
    body = draw(st.sampled_from([b"", b"hello", b'{"jsonrpc":"2.0","id":1,"method":"ping"}']))
    chunked = draw(st.booleans())
    headers: list[tuple[bytes, bytes]] = [(b"Host", b"127.0.0.1")]
    if chunked:
        headers.append((b"Transfer-Encoding", b"chunked"))
        payload = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    else:
        headers.append((b"Content-Length", str(len(body)).encode()))
        payload = body
    method, target, version = b"POST", b"/mcp", b"HTTP/1.1"
    colon, sep = b": ", b"\r\n"
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.integers(0, 8))
        if kind == 0:
            headers.insert(draw(st.integers(0, len(headers))), (draw(_NAMES), draw(_VALUES)))
        elif kind == 1:
            headers.append(draw(st.sampled_from(headers)))
        elif kind == 2:
            i = draw(st.integers(0, len(headers) - 1))
            headers[i] = (headers[i][0], draw(_VALUES))
        elif kind == 3:
            colon = draw(st.sampled_from([b":", b" : ", b":\t", b"::"]))
        elif kind == 4:
            sep = draw(_SEPS)
        elif kind == 5:
            method = draw(st.sampled_from([b"GET", b"DELETE", b"post", b"P OST", b"GET\x00"]))
        elif kind == 6:
            target = draw(st.sampled_from([b"/", b"*", b"/mcp?x=1", b"/m cp", b"http://h/mcp"]))
        elif kind == 7:
            version = draw(st.sampled_from([b"HTTP/1.0", b"HTTP/1.10", b"http/1.1", b"HTTP/2.0"]))
        else:
            payload = draw(_BODIES)
    lines = [method + b" " + target + b" " + version]
    lines += [name + colon + value for name, value in headers]
    return sep.join(lines) + sep + sep + payload


# h11 folds repeated identical Content-Length fields into one (RFC 9110
# allows the repetition); framing is compared through the body instead.
_FRAMING = {b"content-length", b"transfer-encoding"}


def _comparable(parsed: Parsed | None) -> Parsed | None:
    if parsed is None:
        return None
    method, target, headers, body = parsed
    return method, target, [h for h in headers if h[0] not in _FRAMING], body


def _check(data: bytes) -> None:
    mine = ours(data)
    if mine is not None:
        assert _comparable(theirs(data)) == _comparable(mine), (data, mine)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_what_we_accept_h11_accepts_identically(data: bytes) -> None:
    _check(data)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes) -> None:
    _check(b"POST /mcp HTTP/1.1\r\nHost: h\r\n" + data)


def test_a_plain_request_is_accepted_by_both() -> None:
    data = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello"
    assert ours(data) is not None
    _check(data)


def test_repeated_content_length_must_be_the_same_text() -> None:
    # Found by the property above: "05" beside "5" is one number but two texts.
    data = b"POST /mcp HTTP/1.1\r\nHost: h\r\nContent-Length: 05\r\nContent-Length: 5\r\n\r\nhello"
    assert ours(data) is None
    same = b"POST /mcp HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
    assert ours(same) is not None
    _check(same)
