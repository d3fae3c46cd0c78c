"""The hand-written HTTP parsers on both ends, fed in arbitrary pieces."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentwall.benchtool.channels import ChannelError, ResponseParser, classify, sse_messages
from agentwall.demo.fast_server import HttpError, RequestParser

RESPONSES = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 13\r\n\r\n"
    b'{"a":"hello"}'
    b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n"
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    b'5\r\nevent\r\n19\r\n: message\ndata: {"x":1}\n\n\r\n0\r\n\r\n'
    b"HTTP/1.1 204 No Content\r\n\r\n"
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_response_parser_any_split_gives_same_result(cuts: list[int]) -> None:
    parser = ResponseParser()
    got = []
    for piece in _split(RESPONSES, cuts):
        got.extend(parser.feed(piece))
    assert [status for status, _, _ in got] == [200, 202, 200, 204]
    assert got[0][2] == b'{"a":"hello"}'
    assert got[1][2] == b""
    assert sse_messages(got[2][2]) == [{"x": 1}]


def test_response_parser_refuses_close_delimited_body() -> None:
    with pytest.raises(ChannelError):
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{}")


def _requests() -> bytes:
    body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
    first = b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    chunked = b"POST /?q=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    last = b"DELETE /mcp HTTP/1.0\r\n\r\n"
    return first + chunked + last


@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_request_parser_any_split_gives_same_result(cuts: list[int]) -> None:
    parser = RequestParser()
    got = []
    for piece in _split(_requests(), cuts):
        parser.feed(piece)
        while (request := parser.next_request()) is not None:
            got.append(request)
    assert [(r.method, r.path, r.keep_alive) for r in got] == [
        (b"POST", b"/mcp", True),
        (b"POST", b"/", True),
        (b"DELETE", b"/mcp", False),
    ]
    assert orjson.loads(got[0].body)["method"] == "ping"
    assert got[1].body == b"abc"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nBad Header : x\r\n\r\n", 400),
        (b"GET /\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ],
)
def test_request_parser_rejects_ambiguous_framing(raw: bytes, status: int) -> None:
    parser = RequestParser()
    parser.feed(raw)
    with pytest.raises(HttpError) as info:
        parser.next_request()
    assert info.value.status == status


def test_request_parser_bounds_the_head() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\n" + b"x-long: " + b"a" * 70_000)
    with pytest.raises(HttpError) as info:
        parser.next_request()
    assert info.value.status == 431


@pytest.mark.parametrize(
    ("status", "message", "outcome"),
    [
        (200, {"jsonrpc": "2.0", "id": 3, "result": {}}, "ok"),
        (200, {"jsonrpc": "2.0", "id": 3, "error": {"code": -32001, "message": "no"}}, "rpc-32001"),
        (200, {"jsonrpc": "2.0", "id": 4, "result": {}}, "bad"),
        (200, None, "bad"),
        (503, None, "http503"),
        (400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32600}}, "http400/rpc-32600"),
    ],
)
def test_classify(status: int, message: object, outcome: str) -> None:
    assert classify(status, message, 3) == outcome
