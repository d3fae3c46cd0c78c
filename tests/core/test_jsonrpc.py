from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from agentwall.core.jsonrpc import (
    ErrorObject,
    ErrorResponse,
    Notification,
    Request,
    Response,
    encode_message,
    error_response,
    frame_error_response,
    parse,
    parse_message,
)
from agentwall.errors import INVALID_REQUEST, PARSE_ERROR, FrameError

CORPUS = Path(__file__).parent / "corpus"


def _corpus(prefix: str) -> list[Path]:
    return sorted(CORPUS.glob(f"{prefix}*.json"))


@pytest.mark.parametrize("path", _corpus("accept_"), ids=lambda p: p.stem)
@pytest.mark.usefixtures("json_counts")
def test_corpus_accepted_and_reencoding_is_stable(path: Path) -> None:
    data = path.read_bytes()
    parsed = parse(data)
    assert not any(isinstance(m, FrameError) for m in _items(parsed.message))
    # The stdlib reads our re-encoding as the same value the sender meant.
    assert json.loads(parsed.wire) == json.loads(data)
    again = parse(parsed.wire)
    assert again.message == parsed.message
    assert again.wire == parsed.wire


@pytest.mark.parametrize("path", _corpus("reject_"), ids=lambda p: p.stem)
@pytest.mark.usefixtures("json_counts")
def test_corpus_rejected_with_its_code(path: Path) -> None:
    expected = -int(path.stem.split("_")[1])
    with pytest.raises(FrameError) as info:
        parse_message(path.read_bytes())
    assert info.value.rpc_code == expected, str(info.value)


def _items(message: object) -> list[object]:
    return list(message) if isinstance(message, list) else [message]


def test_request_fields() -> None:
    msg = parse_message(b'{"jsonrpc":"2.0","id":"x","method":"tools/list"}')
    assert msg == Request(id="x", method="tools/list")
    assert msg.params is msgspec.UNSET  # type: ignore[union-attr]


def test_notification_response_error() -> None:
    assert parse_message(b'{"jsonrpc":"2.0","method":"n","params":{"a":1}}') == Notification(
        method="n", params={"a": 1}
    )
    assert parse_message(b'{"jsonrpc":"2.0","id":3,"result":[1]}') == Response(id=3, result=[1])
    assert parse_message(
        b'{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"m"}}'
    ) == ErrorResponse(id=3, error=ErrorObject(code=-1, message="m"))


def test_response_null_result_is_not_missing_result() -> None:
    assert parse_message(b'{"jsonrpc":"2.0","id":3,"result":null}') == Response(id=3, result=None)
    with pytest.raises(FrameError, match="needs result or error"):
        parse_message(b'{"jsonrpc":"2.0","id":3}')


@pytest.mark.parametrize(
    ("data", "rpc_id"),
    [
        (b'{"jsonrpc":"2.0","id":9,"method":1}', 9),
        (b'{"jsonrpc":"2.0","id":"s","method":"a","result":1}', "s"),
        (b'{"jsonrpc":"2.0","id":9,"method":"a","params":{"k":1,"k":2}}', 9),
        (b'{"jsonrpc":"2.0","id":9,"method":"a","extra":true}', 9),
        (b'{"jsonrpc":"1.0","id":9,"method":"a"}', 9),
        # "id" itself repeated: no id is trustworthy, answer with null.
        (b'{"jsonrpc":"2.0","id":9,"id":10,"method":"a"}', None),
        (b'{"jsonrpc":"2.0","id":true,"method":"a"}', None),
        (b'{"jsonrpc":"2.0","id":9,"method":"a"', None),
    ],
)
def test_request_id_recovered_when_readable(data: bytes, rpc_id: object) -> None:
    with pytest.raises(FrameError) as info:
        parse_message(data)
    assert info.value.rpc_id == rpc_id


def test_batch_items_judged_one_by_one() -> None:
    batch = parse_message(
        b'[{"jsonrpc":"2.0","id":1,"method":"a"},7,{"jsonrpc":"2.0","id":2,"method":3}]'
    )
    assert isinstance(batch, list)
    assert batch[0] == Request(id=1, method="a")
    assert isinstance(batch[1], FrameError)
    assert batch[1].rpc_code == INVALID_REQUEST
    assert isinstance(batch[2], FrameError)
    assert batch[2].rpc_id == 2
    assert encode_message(batch) == b'[{"jsonrpc":"2.0","id":1,"method":"a"}]'


def test_size_limit() -> None:
    data = b'{"jsonrpc":"2.0","id":1,"method":"a","params":{"s":"' + b"x" * 100 + b'"}}'
    parse_message(data, max_size=len(data))
    with pytest.raises(FrameError, match="exceeds") as info:
        parse_message(data, max_size=len(data) - 1)
    assert info.value.rpc_code == INVALID_REQUEST


@pytest.mark.parametrize("pad", [0, 20_000], ids=["scan-bytes", "walk-decoded"])
@pytest.mark.parametrize("depth", [1, 2, 3, 7, 8, 9, 10, 15, 16, 17, 40])
@pytest.mark.usefixtures("json_counts")
def test_depth_limit_is_exact(depth: int, pad: int) -> None:
    # depth counts containers: the envelope is 1, params 2, then the arrays.
    if depth == 1:
        data = b'{"jsonrpc":"2.0","id":1,"method":"a"}'
    else:
        inner = depth - 2
        data = (
            b'{"jsonrpc":"2.0","id":1,"method":"a","params":{"a":'
            + b"[" * inner
            + b"1"
            + b"]" * inner
            + b',"b":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\"]]"}}'
        )
    parse_message(data, max_depth=depth)
    if depth > 1:
        with pytest.raises(FrameError, match="nesting"):
            parse_message(data, max_depth=depth - 1)


@pytest.mark.usefixtures("json_counts")
def test_depth_limit_counts_brackets_outside_strings_only() -> None:
    text = '"]]]]\\\\" [[[[ \\" {{{{'
    data = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "a", "params": {"t": text * 50}})
    parse_message(data.encode(), max_depth=2)


def test_wide_shallow_document_passes_the_depth_check() -> None:
    items = ",".join(["[[[1]]]"] * 5000)
    data = ('{"jsonrpc":"2.0","id":1,"method":"a","params":{"a":[' + items + "]}}").encode()
    parse_message(data, max_depth=6)
    with pytest.raises(FrameError, match="nesting"):
        parse_message(data, max_depth=5)


@pytest.mark.parametrize("n", [1000, 100_000])
def test_very_deep_nesting_is_a_clean_error(n: int) -> None:
    for data in (b"[" * n + b"]" * n, b'{"a":' * n + b"1" + b"}" * n, b"[" * n):
        with pytest.raises(FrameError) as info:
            parse_message(data)
        assert info.value.rpc_code == INVALID_REQUEST


@pytest.mark.usefixtures("json_counts")
def test_very_deep_nesting_in_a_text_heavy_document() -> None:
    n = 100_000
    data = b'{"jsonrpc":"2.0","id":1,"method":"a","params":{"t":"' + b"t" * (40 * n)
    data += b'","a":' + b"[" * n + b"]" * n + b"}}"
    with pytest.raises(FrameError) as info:
        parse_message(data, max_size=len(data))
    assert info.value.rpc_code == INVALID_REQUEST


def test_deep_nesting_without_limit_still_clean() -> None:
    # Even with the configured limit set absurdly high, the decoder's own
    # recursion guard becomes a FrameError, never a RecursionError.
    data = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(FrameError):
        parse_message(data, max_depth=10**9)


def test_error_response_encoding() -> None:
    assert error_response(1, -32001, "denied") == (
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"denied"}}'
    )
    assert json.loads(error_response(None, -32700, "bad", {"rule": "r"})) == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32700, "message": "bad", "data": {"rule": "r"}},
    }
    err = FrameError("x", rpc_code=PARSE_ERROR)
    assert json.loads(frame_error_response(err))["error"]["code"] == PARSE_ERROR


def test_reencoding_is_ours_not_the_senders() -> None:
    data = b'{ "method" : "a", "params" : {"x":1.0e1, "y" : "\\u00e9"}, "id":1, "jsonrpc":"2.0"}'
    wire = parse(data).wire
    assert wire == '{"jsonrpc":"2.0","id":1,"method":"a","params":{"x":10.0,"y":"é"}}'.encode()


@pytest.mark.parametrize(
    ("head", "rpc_id"),
    [
        (b'{"jsonrpc":"2.0","id":7,"result":"zzzz', 7),
        (b'{"jsonrpc":"2.0","method":"tools/call","id":"r-1","params":{', "r-1"),
        (b' { "id" : -3 , "jsonrpc"', -3),
        (b'{"id":12', None),  # the number may go on past the head
        (b'{"id":"unterminated', None),
        (b'{"result":{"id":5}', None),  # a nested id is not the message's
        (b'{"id":1.5,', None),
        (b'{"id":true,', None),
        (b"garbage", None),
    ],
)
def test_sniff_id(head: bytes, rpc_id: object) -> None:
    from agentwall.core.jsonrpc import sniff_id

    assert sniff_id(head) == rpc_id
