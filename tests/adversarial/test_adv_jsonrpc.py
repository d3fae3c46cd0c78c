"""Red team: the strict JSON-RPC parser against hostile documents.

The contract attacked here: ``parse`` raises ``FrameError`` and nothing else,
whatever the bytes; what it accepts re-encodes to a document every parser
reads the same way (no duplicate keys, one meaning); and a batch is judged
item by item, so an invalid item never takes its neighbours down with it.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentwall.core.jsonrpc import FrameError as CoreFrameError
from agentwall.core.jsonrpc import Request, parse, parse_message
from agentwall.errors import INVALID_REQUEST, PARSE_ERROR, FrameError

assert CoreFrameError is FrameError

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}

# Items that decode into the envelope but are invalid JSON-RPC on their own:
# before the fix, any one of them in a batch made parse() raise TypeError
# (msgspec cannot encode the FrameError placeholder), which killed wrap's
# reader for the host (session over, no error sent) or for the server (its
# answers in that line lost).
INVALID_ITEMS: list[dict[str, Any]] = [
    {"jsonrpc": "2.0", "id": 2, "method": "ping", "result": 1},
    {"jsonrpc": "2.0"},
    {"jsonrpc": "2.0", "id": None, "method": "x"},
    {"jsonrpc": "2.0", "id": 2, "result": 1, "params": {}},
    {"jsonrpc": "2.0", "id": 2, "result": 1, "error": {"code": 1, "message": "m"}},
    {"jsonrpc": "2.0", "id": None, "result": 1},
    {"jsonrpc": "2.0", "id": 2},
]


@pytest.mark.parametrize("bad", INVALID_ITEMS, ids=lambda b: json.dumps(b, sort_keys=True))
def test_batch_with_an_item_invalid_on_its_own_is_judged_item_by_item(bad: dict[str, Any]) -> None:
    data = json.dumps([PING, bad, {**PING, "id": 3}]).encode()
    parsed = parse(data)
    assert isinstance(parsed.message, list)
    good1, err, good3 = parsed.message
    assert isinstance(good1, Request)
    assert isinstance(err, FrameError)
    assert isinstance(good3, Request)
    assert (good1.id, err.rpc_code, good3.id) == (1, INVALID_REQUEST, 3)
    # The wire carries only what may go on, and parses back to it.
    again = parse(parsed.wire)
    assert again.message == [good1, good3]


def test_batch_with_invalid_item_and_duplicate_key_is_refused_whole() -> None:
    data = (
        b'[{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"ping"},'
        b'{"jsonrpc":"2.0","id":2,"method":"x","result":1}]'
    )
    with pytest.raises(FrameError) as info:
        parse(data)
    assert info.value.rpc_code == INVALID_REQUEST
    assert "duplicate" in str(info.value)


# --- open-ended: arbitrary envelopes, valid or not, alone or batched ---------------------

_ids = (
    st.integers(-(2**70), 2**70)
    | st.text(max_size=6)
    | st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
)
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
    max_leaves=8,
)


@st.composite
def envelopes(draw: st.DrawFn) -> Any:
    """Any mix of the JSON-RPC members, each present or not, well or badly typed."""
    if draw(st.integers(0, 9)) == 0:
        return draw(_values)
    env: dict[str, Any] = {}
    if draw(st.integers(0, 9)) > 0:
        env["jsonrpc"] = draw(st.sampled_from(["2.0", "2.0", "1.0", 2]))
    if draw(st.booleans()):
        env["id"] = draw(_ids)
    if draw(st.booleans()):
        env["method"] = draw(st.sampled_from(["ping", "tools/call", 5, None]))
    if draw(st.booleans()):
        env["params"] = draw(st.dictionaries(st.text(max_size=4), _values, max_size=2) | _values)
    if draw(st.integers(0, 3)) == 0:
        env["result"] = draw(_values)
    if draw(st.integers(0, 3)) == 0:
        env["error"] = draw(
            st.fixed_dictionaries({"code": st.integers(-5, 5), "message": st.text(max_size=3)})
            | _values
        )
    if draw(st.integers(0, 15)) == 0:
        env[draw(st.sampled_from(["extra", "_meta"]))] = 1
    return env


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(envelopes(), min_size=0, max_size=5) | envelopes())
def test_parse_raises_only_frame_error_and_accepted_wire_is_a_fixed_point(doc: Any) -> None:
    data = json.dumps(doc).encode()
    try:
        parsed = parse(data)
    except FrameError as exc:
        code = exc.rpc_code
        assert code in (INVALID_REQUEST, PARSE_ERROR)
        return
    if isinstance(parsed.message, list):
        valid = [m for m in parsed.message if not isinstance(m, FrameError)]
        if not valid:
            assert parsed.wire == b"[]"
            return
        assert parse_message(parsed.wire) == valid
    else:
        assert parse_message(parsed.wire) == parsed.message
    # No member of what we forward is ever repeated (one meaning for every reader).
    json.loads(parsed.wire, object_pairs_hook=_no_dup)


def _no_dup(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), keys
    return dict(pairs)


# --- duplicate keys hidden by escapes: every spelling is caught --------------------------

DUPLICATE_SPELLINGS = [
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","n\\u0061me":"b"}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","n\\u0061me":"b:"}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a:","name":"b\\u003a"}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\\u003A","name":"b"}}',
    b'{"jsonrpc":"2.0","id":1,"m\\u0065thod":"tools/call","method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping","\\u006d\\u0065\\u0074\\u0068\\u006f\\u0064":"x"}',
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":{"k":1,"\\u006b":2}}}',
    b'[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"id":3,"method":"x"}]',
]


@pytest.mark.parametrize("data", DUPLICATE_SPELLINGS)
def test_duplicate_keys_in_every_spelling_are_refused(data: bytes) -> None:
    with pytest.raises(FrameError) as info:
        parse(data)
    assert info.value.rpc_code == INVALID_REQUEST


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(st.text(max_size=5), st.integers(), min_size=1, max_size=4),
    st.data(),
)
def test_a_repeated_key_spelt_with_escapes_is_always_caught(obj: dict[str, Any], data: Any) -> None:
    key = data.draw(st.sampled_from(sorted(obj)))
    # Spell the repeated key with every character escaped; colons inside
    # values are sprinkled in to try to balance the colon count.
    units = key.encode("utf-16-be")
    escaped = "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
    filler = data.draw(st.sampled_from(["", ":", "\\u003a", "::"]))
    body = json.dumps(obj)[:-1] + f', "{escaped}": "{filler}"}}'
    doc = b'{"jsonrpc":"2.0","id":1,"method":"m","params":' + body.encode() + b"}"
    with pytest.raises(FrameError):
        parse(doc)


def test_nul_bytes_bom_and_overlong_utf8_are_refused() -> None:
    good = msgspec.json.encode(PING)
    for data in (b"\xef\xbb\xbf" + good, good + b"\x00", good.replace(b"ping", b"p\xc0\xaeng")):
        with pytest.raises(FrameError) as info:
            parse(data)
        assert info.value.rpc_code == PARSE_ERROR


# Held: lenient-JSON spellings some parsers take; all refused as -32700.
LENIENT_JSON = [
    b'{"jsonrpc":"2.0","id":01,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1.,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":+1,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping",}',
    b'{"jsonrpc":"2.0","id":1,"method":"pi\tng"}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping"/*c*/}',
    b'{\'jsonrpc\':"2.0","id":1,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":Infinity}}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":"\\x41"}}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":"\\ud800"}}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":1e400}}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping"}{"jsonrpc":"2.0","id":2,"method":"ping"}',
]


@pytest.mark.parametrize("data", LENIENT_JSON)
def test_lenient_json_is_refused(data: bytes) -> None:
    with pytest.raises(FrameError) as info:
        parse(data)
    assert info.value.rpc_code == PARSE_ERROR
