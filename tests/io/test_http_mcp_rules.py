"""MCP-over-HTTP header rules, replayed as transcripts of (headers, body) -> verdict."""

from __future__ import annotations

import base64
import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentwall.core import mcp_http as mh
from agentwall.errors import HEADER_MISMATCH, INVALID_REQUEST, UNSUPPORTED_PROTOCOL_VERSION

MODERN = "2026-07-28"


def meta(**headers: str) -> mh.RequestMeta:
    pairs = [
        (k.replace("_", "-").lower().encode(), v.encode("latin-1")) for k, v in headers.items()
    ]
    return mh.read_request_meta(pairs)


def body_of(reply: mh.HttpReply) -> dict[str, Any]:
    decoded = orjson.loads(reply.body)
    assert isinstance(decoded, dict)
    return decoded


def modern_params(name: str | None = None, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"_meta": {mh.PROTOCOL_VERSION_META_KEY: MODERN}, **extra}
    if name is not None:
        params["name"] = name
    return params


# -- sentinel values ---------------------------------------------------------


@pytest.mark.parametrize(
    ("original", "encoded"),
    [
        ("us-west1", "us-west1"),
        ("Hello, 世界", "=?base64?SGVsbG8sIOS4lueVjA==?="),
        (" padded ", "=?base64?IHBhZGRlZCA=?="),
        ("line1\nline2", "=?base64?bGluZTEKbGluZTI=?="),
        ("=?base64?literal?=", "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
    ],
)
def test_value_encoding_matches_the_spec_table(original: str, encoded: str) -> None:
    assert mh.encode_header_value(original) == encoded
    assert mh.decode_header_value(encoded) == original


@pytest.mark.parametrize("bad", ["=?base64?!!!?=", "=?base64?/w==?="])  # not base64; not UTF-8
def test_invalid_sentinel_is_an_error_not_literal_text(bad: str) -> None:
    with pytest.raises(mh.HeaderValueError):
        mh.decode_header_value(bad)


def test_sentinel_markers_are_case_sensitive() -> None:
    assert mh.decode_header_value("=?BASE64?aGk=?=") == "=?BASE64?aGk=?="


@given(st.text())
def test_encode_then_decode_is_identity(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates cannot be sent at all
    assert mh.decode_header_value(mh.encode_header_value(value)) == value


# -- head checks ----------------------------------------------------------------


def test_unknown_protocol_version_is_400_with_supported_list() -> None:
    reply = mh.check_request_head(
        meta(mcp_protocol_version="1900-01-01", content_type="application/json"), b"POST"
    )
    assert reply is not None
    assert reply.status == 400
    err = body_of(reply)["error"]
    assert err["code"] == UNSUPPORTED_PROTOCOL_VERSION
    assert err["data"]["requested"] == "1900-01-01"
    assert MODERN in err["data"]["supported"]


def test_duplicated_routing_header_is_refused() -> None:
    pairs = [
        (b"content-type", b"application/json"),
        (b"mcp-method", b"tools/call"),
        (b"mcp-method", b"tools/list"),
    ]
    reply = mh.check_request_head(mh.read_request_meta(pairs), b"POST")
    assert reply is not None
    assert reply.status == 400
    assert body_of(reply)["error"]["code"] == HEADER_MISMATCH


@pytest.mark.parametrize("sid", ["has space", "tab\tin", "é"])
def test_session_id_must_be_visible_ascii(sid: str) -> None:
    reply = mh.check_request_head(
        meta(mcp_session_id=sid, content_type="application/json"), b"POST"
    )
    assert reply is not None
    assert reply.status == 400


def test_post_needs_json_content_type() -> None:
    reply = mh.check_request_head(meta(content_type="text/plain"), b"POST")
    assert reply is not None
    assert reply.status == 415
    assert (
        mh.check_request_head(meta(content_type="application/json; charset=utf-8"), b"POST") is None
    )
    assert mh.check_request_head(meta(), b"GET") is None


# -- body against headers (2026-07-28 Server Validation) ---------------------------


def check(
    m: mh.RequestMeta, method: str, params: Any, kind: str = "request"
) -> mh.HttpReply | None:
    return mh.check_body_headers(m, kind=kind, method=method, params=params, rpc_id=7)


def test_modern_request_with_matching_headers_passes() -> None:
    m = meta(mcp_protocol_version=MODERN, mcp_method="tools/call", mcp_name="get_weather")
    assert check(m, "tools/call", modern_params("get_weather")) is None


def test_modern_request_without_mcp_method_is_mismatch() -> None:
    reply = check(meta(mcp_protocol_version=MODERN), "tools/list", modern_params())
    assert reply is not None
    assert reply.status == 400
    assert body_of(reply) == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {
            "code": HEADER_MISMATCH,
            "message": "Header mismatch: required Mcp-Method header is missing",
        },
    }


def test_method_header_must_match_body() -> None:
    m = meta(mcp_protocol_version=MODERN, mcp_method="tools/list")
    reply = check(m, "tools/call", modern_params("x"))
    assert reply is not None
    assert body_of(reply)["error"]["code"] == HEADER_MISMATCH


def test_name_header_must_match_body_after_decoding() -> None:
    encoded = mh.encode_header_value("wetter-für-morgen")
    ok = meta(mcp_protocol_version=MODERN, mcp_method="tools/call", mcp_name=encoded)
    assert check(ok, "tools/call", modern_params("wetter-für-morgen")) is None
    lying = meta(mcp_protocol_version=MODERN, mcp_method="tools/call", mcp_name="safe_tool")
    reply = check(lying, "tools/call", modern_params("delete_everything"))
    assert reply is not None
    assert reply.status == 400
    assert "delete_everything" in body_of(reply)["error"]["message"]


def test_resources_read_name_is_the_uri() -> None:
    m = meta(mcp_protocol_version=MODERN, mcp_method="resources/read", mcp_name="file:///a.txt")
    assert check(m, "resources/read", modern_params(uri="file:///a.txt")) is None
    reply = check(m, "resources/read", modern_params(uri="file:///etc/passwd"))
    assert reply is not None
    assert reply.status == 400


def test_modern_name_bearing_method_needs_mcp_name() -> None:
    m = meta(mcp_protocol_version=MODERN, mcp_method="prompts/get")
    reply = check(m, "prompts/get", modern_params("greet"))
    assert reply is not None
    assert "Mcp-Name" in body_of(reply)["error"]["message"]


def test_protocol_version_header_must_match_meta() -> None:
    m = meta(mcp_protocol_version=MODERN, mcp_method="tools/list")
    reply = check(m, "tools/list", {"_meta": {mh.PROTOCOL_VERSION_META_KEY: "2025-11-25"}})
    assert reply is not None
    assert body_of(reply)["error"]["code"] == HEADER_MISMATCH
    # Without params._meta's protocolVersion the request is malformed:
    # invalid params (2026-07-28), not a header mismatch.
    for params in ({}, {"_meta": {}}, {"_meta": {mh.PROTOCOL_VERSION_META_KEY: 7}}):
        reply = check(m, "tools/list", params)
        assert reply is not None
        assert reply.status == 400
        assert body_of(reply)["error"]["code"] == -32602


def test_undecodable_name_header_is_mismatch() -> None:
    m = meta(mcp_protocol_version=MODERN, mcp_method="tools/call", mcp_name="=?base64?***?=")
    reply = check(m, "tools/call", modern_params("x"))
    assert reply is not None
    assert body_of(reply)["error"]["code"] == HEADER_MISMATCH


def test_legacy_headers_are_optional_but_must_not_lie() -> None:
    legacy = meta(mcp_protocol_version="2025-11-25")
    assert check(legacy, "tools/call", {"name": "x"}) is None
    lying = meta(mcp_protocol_version="2025-11-25", mcp_method="tools/list")
    assert check(lying, "tools/call", {"name": "x"}) is not None
    lying_name = meta(mcp_protocol_version="2025-06-18", mcp_name="a")
    assert check(lying_name, "tools/call", {"name": "b"}) is not None


def test_name_header_on_a_method_without_a_name_is_refused() -> None:
    m = meta(mcp_protocol_version=MODERN, mcp_method="tools/list", mcp_name="x")
    assert check(m, "tools/list", modern_params()) is not None


def test_modern_clients_must_not_send_responses() -> None:
    reply = check(meta(mcp_protocol_version=MODERN), "", None, kind="response")
    assert reply is not None
    assert body_of(reply)["error"]["code"] == INVALID_REQUEST
    assert check(meta(mcp_protocol_version="2025-11-25"), "", None, kind="response") is None


def test_batches_only_where_the_version_has_them() -> None:
    assert mh.check_batch_allowed(meta()) is None  # absent header means 2025-03-26
    assert mh.check_batch_allowed(meta(mcp_protocol_version="2025-03-26")) is None
    reply = mh.check_batch_allowed(meta(mcp_protocol_version="2025-06-18"))
    assert reply is not None
    assert reply.status == 400


def test_param_headers_must_be_decodable() -> None:
    good = [(b"mcp-param-region", b"us-west1"), (b"mcp-param-g", b"=?base64?aGk=?=")]
    assert mh.check_param_headers(good) is None
    assert mh.check_param_headers([(b"mcp-param-x", b"=?base64?%%?=")]) is not None
    assert mh.read_request_meta(good).param_headers
    assert not mh.read_request_meta([(b"mcp-method", b"tools/call")]).param_headers


# -- forwarding ------------------------------------------------------------------


def test_forwarded_headers_drop_credentials_and_hop_by_hop() -> None:
    pairs = [
        (b"host", b"127.0.0.1:8080"),
        (b"authorization", b"Bearer agent-token"),
        (b"cookie", b"a=b"),
        (b"connection", b"keep-alive, x-hop"),
        (b"x-hop", b"1"),
        (b"content-length", b"10"),
        (b"origin", b"http://localhost:3000"),
        (b"mcp-session-id", b"abc"),
        (b"mcp-protocol-version", b"2025-11-25"),
        (b"mcp-param-region", b"eu"),
        (b"last-event-id", b"42"),
        (b"accept", b"application/json, text/event-stream"),
        (b"traceparent", b"00-1-2-01"),
    ]
    m = mh.read_request_meta(pairs)
    names = [n for n, _ in m.forward]
    assert names == [
        b"mcp-session-id",
        b"mcp-protocol-version",
        b"mcp-param-region",
        b"last-event-id",
        b"accept",
        b"traceparent",
    ]
    assert m.authorization == "Bearer agent-token"


def test_relayed_response_headers_drop_framing() -> None:
    out, content_type = mh.response_headers_to_relay(
        [
            (b"content-type", b"text/event-stream"),
            (b"transfer-encoding", b"chunked"),
            (b"content-length", b"5"),
            (b"mcp-session-id", b"s1"),
            (b"x-accel-buffering", b"no"),
            (b"connection", b"x-hop"),
            (b"x-hop", b"1"),
            (b"content-type", b"application/json"),
        ]
    )
    # Content-Type apart (the relay sets exactly one): the first one given.
    assert content_type == b"text/event-stream"
    assert out == ((b"mcp-session-id", b"s1"), (b"x-accel-buffering", b"no"))


# -- Origin / Host -------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    ["http://localhost:3000", "http://127.0.0.1", "https://[::1]:8443", "http://app.localhost:1"],
)
def test_loopback_origins_pass(origin: str) -> None:
    assert (
        mh.check_origin_and_host(meta(origin=origin, host="127.0.0.1:8080"), mh.OriginPolicy())
        is None
    )


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "http://127.0.0.1.evil.example", "file://"]
)
def test_foreign_origins_get_403(origin: str) -> None:
    reply = mh.check_origin_and_host(meta(origin=origin, host="127.0.0.1:8080"), mh.OriginPolicy())
    assert reply is not None
    assert reply.status == 403
    assert body_of(reply)["id"] is None


def test_configured_origin_passes() -> None:
    policy = mh.OriginPolicy(allowed_origins=frozenset({"https://ide.example.com"}))
    m = meta(origin="https://ide.example.com", host="127.0.0.1:8080")
    assert mh.check_origin_and_host(m, policy) is None


def test_rebound_host_is_refused_when_listening_on_loopback() -> None:
    reply = mh.check_origin_and_host(meta(host="evil.example:8080"), mh.OriginPolicy())
    assert reply is not None
    assert reply.status == 403
    assert (
        mh.check_origin_and_host(meta(host="evil.example:8080"), mh.OriginPolicy(check_host=False))
        is None
    )
    assert mh.check_origin_and_host(meta(host="localhost:8080"), mh.OriginPolicy()) is None


# -- SSE -------------------------------------------------------------------------------

STREAM = (
    b'event: message\r\nid: 1\r\ndata: {"a":1}\r\n\r\n'
    b": keep-alive\r\n\r\n"
    b"data: x\ndata: y\n\n"
    b"id: 9\rretry: 250\rdata: {}\r\r"
)


def test_sse_events_whole_stream() -> None:
    parser = mh.SseParser()
    events = parser.feed(STREAM) + parser.close()
    assert [(e.data, e.id, e.event, e.retry) for e in events] == [
        (b'{"a":1}', "1", "message", None),
        (None, None, None, None),
        (b"x\ny", None, None, None),
        (b"{}", "9", None, 250),
    ]


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=8))
def test_sse_split_anywhere_gives_the_same_events(cuts: list[int]) -> None:
    points = sorted({0, len(STREAM), *cuts})
    parser = mh.SseParser()
    events: list[mh.SseEvent] = []
    for a, b in itertools.pairwise(points):
        events += parser.feed(STREAM[a:b])
    events += parser.close()
    whole = mh.SseParser()
    expected = whole.feed(STREAM) + whole.close()
    assert [(e.data, e.id, e.retry) for e in events] == [(e.data, e.id, e.retry) for e in expected]


def test_sse_relay_is_byte_exact_for_untouched_events() -> None:
    parser = mh.SseParser()
    events = parser.feed(STREAM[:-1])  # all but the last CR: last event still pending
    assert b"".join(e.raw for e in events) == STREAM[: len(b"".join(e.raw for e in events))]
    assert len(events) == 3


def test_sse_event_size_is_bounded() -> None:
    parser = mh.SseParser(max_event_bytes=100)
    with pytest.raises(mh.SseError):
        parser.feed(b"data: " + b"x" * 200)


def test_encode_sse_event_round_trips() -> None:
    data = orjson.dumps({"jsonrpc": "2.0", "method": "notifications/progress"})
    raw = mh.encode_sse_event(data, event_id="5", event="message")
    (event,) = mh.SseParser().feed(raw)
    assert (event.data, event.id, event.event) == (data, "5", "message")


def test_base64_sentinel_value_from_sdk_is_accepted() -> None:
    value = "=?base64?" + base64.b64encode("naïve".encode()).decode() + "?="
    assert mh.decode_header_value(value) == "naïve"


# -- upstream responses (strict HTTP/1.1 framing) --------------------------------------
# These and the request tests below run over both head scans (C and Python).

CHUNKED = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n"
)


def events_of(raw: bytes, cuts: list[int] | None = None) -> list[object]:
    parser = mh.ResponseParser()
    points = sorted({0, len(raw), *(cuts or [])})
    out: list[object] = []
    for a, b in itertools.pairwise(points):
        out += parser.feed(raw[a:b])
    return out


def body_and_head(events: list[object]) -> tuple[mh.ResponseHead, bytes, bool]:
    head = events[0]
    assert isinstance(head, mh.ResponseHead)
    body = b"".join(e for e in events if isinstance(e, bytes))
    return head, body, events[-1] is mh.BODY_END


@pytest.mark.usefixtures("head_scan")
def test_chunked_response_with_informational_and_trailers() -> None:
    head, body, ended = body_and_head(events_of(CHUNKED))
    assert (head.status, head.keep_alive, body, ended) == (200, True, b"helloabc", True)
    assert (b"content-type", b"text/event-stream") in head.headers


@given(st.lists(st.integers(min_value=0, max_value=len(CHUNKED)), max_size=10))
@pytest.mark.usefixtures("head_scan")
def test_response_split_anywhere_gives_the_same_result(cuts: list[int]) -> None:
    assert body_and_head(events_of(CHUNKED, cuts)) == body_and_head(events_of(CHUNKED))


@pytest.mark.usefixtures("head_scan")
def test_content_length_and_no_body_statuses() -> None:
    head, body, ended = body_and_head(events_of(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    assert (body, ended, head.keep_alive) == (b"ok", True, True)
    head, body, ended = body_and_head(
        events_of(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
    )
    assert (head.status, body, ended) == (202, b"", True)
    head, body, ended = body_and_head(events_of(b"HTTP/1.1 204 No Content\r\n\r\n"))
    assert (head.status, ended) == (204, True)


@pytest.mark.usefixtures("head_scan")
def test_close_delimited_body_ends_at_close() -> None:
    parser = mh.ResponseParser()
    events = parser.feed(b"HTTP/1.0 200 OK\r\n\r\nbody")
    head = events[0]
    assert isinstance(head, mh.ResponseHead)
    assert not head.keep_alive
    assert parser.close() == [mh.BODY_END]


@pytest.mark.usefixtures("head_scan")
def test_connection_close_header_means_no_reuse() -> None:
    head, _, _ = body_and_head(
        events_of(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    )
    assert not head.keep_alive


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: value\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXX",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    ],
)
@pytest.mark.usefixtures("head_scan")
def test_malformed_responses_are_refused(raw: bytes) -> None:
    with pytest.raises(mh.HttpFramingError):
        mh.ResponseParser().feed(raw)


@pytest.mark.usefixtures("head_scan")
def test_oversize_head_is_refused() -> None:
    with pytest.raises(mh.HttpFramingError):
        mh.ResponseParser(max_head=1024).feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 2000)


@pytest.mark.usefixtures("head_scan")
def test_close_mid_response_is_an_error() -> None:
    parser = mh.ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(mh.HttpFramingError):
        parser.close()


# -- the agent's HTTP/1.1 requests --------------------------------------------

REQ_POST = (
    b"POST /mcp?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
    b'X-Empty:\r\nContent-Length: 7\r\n\r\n{"a":1}'
)
REQ_CHUNKED = (
    b"POST /mcp HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'3;ext=1\r\n{"a\r\n4\r\n":1}\r\n0\r\nX-Trailer: t\r\n\r\n'
)


def request_events(parser: mh.RequestParser, *chunks: bytes, eof: bool = False) -> list[Any]:
    """Everything the parser yields for one request (head, body, end)."""
    out: list[Any] = []
    for i, chunk in enumerate(chunks):
        parser.feed(chunk)
        if eof and i == len(chunks) - 1:
            parser.feed_eof()
        while (event := parser.next_event()) is not None:
            out.append(event)
            if event is mh.REQUEST_END or event is mh.CONNECTION_END:
                return out
    return out


def summary(events: list[Any]) -> tuple[Any, ...]:
    head = events[0]
    body = b"".join(e for e in events if isinstance(e, bytes))
    return (head.method, head.target, head.headers, head.keep_alive, body, events[-1])


@pytest.mark.usefixtures("head_scan")
def test_request_head_and_body() -> None:
    events = request_events(mh.RequestParser(), REQ_POST)
    head = events[0]
    assert isinstance(head, mh.RequestHead)
    assert (head.method, head.target, head.http_version) == (b"POST", b"/mcp?x=1", b"1.1")
    assert head.headers == [
        (b"host", b"127.0.0.1:8080"),
        (b"content-type", b"application/json"),
        (b"x-empty", b""),
        (b"content-length", b"7"),
    ]
    assert head.keep_alive
    assert head.content_length == 7
    assert head.head_size == len(REQ_POST) - 7
    assert events[1:] == [b'{"a":1}', mh.REQUEST_END]


@pytest.mark.usefixtures("head_scan")
def test_chunked_request_body_and_trailers() -> None:
    events = request_events(mh.RequestParser(), REQ_CHUNKED)
    assert b"".join(e for e in events if isinstance(e, bytes)) == b'{"a":1}'
    assert events[-1] is mh.REQUEST_END


@given(st.lists(st.integers(min_value=0, max_value=len(REQ_CHUNKED)), max_size=6))
@pytest.mark.usefixtures("head_scan")
def test_request_split_anywhere_gives_the_same_result(cuts: list[int]) -> None:
    for data in (REQ_POST, REQ_CHUNKED):
        points = sorted({c for c in cuts if c <= len(data)} | {0, len(data)})
        pieces = [data[a:b] for a, b in itertools.pairwise(points)] or [data]
        split = request_events(mh.RequestParser(), *pieces)
        assert summary(split) == summary(request_events(mh.RequestParser(), data))


@pytest.mark.usefixtures("head_scan")
def test_pipelined_requests_stay_buffered_for_the_next_cycle() -> None:
    parser = mh.RequestParser()
    get = b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n"
    first = request_events(parser, REQ_POST + get + b"\r\n")
    assert first[-1] is mh.REQUEST_END
    assert parser.next_event() is None  # until start()
    parser.start()
    second = request_events(parser, b"")
    assert second[0].method == b"GET"
    assert second[1] is mh.REQUEST_END
    parser.start()
    assert request_events(parser, b"", eof=True) == [mh.CONNECTION_END]


@pytest.mark.usefixtures("head_scan")
def test_connection_close_and_http10_are_not_kept_alive() -> None:
    close = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n"
    assert not request_events(mh.RequestParser(), close)[0].keep_alive
    old = b"GET / HTTP/1.0\r\n\r\n"  # HTTP/1.0 needs no Host
    head = request_events(mh.RequestParser(), old)[0]
    assert head.http_version == b"1.0"
    assert not head.keep_alive


@pytest.mark.usefixtures("head_scan")
def test_expect_100_continue_is_reported() -> None:
    data = b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n"
    assert request_events(mh.RequestParser(), data)[0].expect_continue


def drain_request(parser: mh.RequestParser) -> None:
    while (event := parser.next_event()) is not mh.REQUEST_END:
        assert event is not None, "the parser waits for more bytes"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (b"GET / http/1.1\r\nHost: h\r\n\r\n", 400),
        (b"G\x00T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET /a\x7fb HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400),  # obs-fold
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\nb\r\n\r\n", 400),  # bare LF
        (b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc", 400),
    ],
)
@pytest.mark.usefixtures("head_scan")
def test_malformed_requests_are_refused(raw: bytes, status: int) -> None:
    parser = mh.RequestParser()
    parser.feed(raw)
    with pytest.raises(mh.HttpRequestError) as caught:
        drain_request(parser)
    assert caught.value.status == status


@pytest.mark.usefixtures("head_scan")
def test_request_head_size_is_bounded() -> None:
    parser = mh.RequestParser(max_head=1024)
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 2000)  # incomplete
    with pytest.raises(mh.HttpRequestError) as caught:
        parser.next_event()
    assert caught.value.status == 431
    parser = mh.RequestParser(max_head=1024)
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 2000 + b"\r\n\r\n")  # complete
    with pytest.raises(mh.HttpRequestError) as caught:
        parser.next_event()
    assert caught.value.status == 431


@pytest.mark.usefixtures("head_scan")
def test_close_in_the_middle_of_a_request_is_an_error() -> None:
    for partial in (
        b"GET / HTTP/1.1\r\nHo",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab",
    ):
        parser = mh.RequestParser()
        with pytest.raises(mh.HttpRequestError):
            request_events(parser, partial, eof=True)


@given(st.binary(max_size=300))
@pytest.mark.usefixtures("head_scan")
def test_arbitrary_bytes_never_crash_the_request_parser(data: bytes) -> None:
    parser = mh.RequestParser(max_head=256)
    parser.feed(data)
    parser.feed_eof()
    status = None
    try:
        for _ in range(1000):
            event = parser.next_event()
            if event is None or event is mh.CONNECTION_END:
                break
            if event is mh.REQUEST_END:
                parser.start()
    except mh.HttpRequestError as exc:
        status = exc.status
    assert status in (None, 400, 431, 501, 505)
