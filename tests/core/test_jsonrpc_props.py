"""Open-ended inputs: only FrameError may escape, and what we accept we
re-encode to something that parses back to the same message."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentwall.core.jsonrpc import _duplicate_keys_exact, parse, parse_message
from agentwall.errors import FrameError

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)
rpc_ids = st.integers(min_value=-(2**63), max_value=2**63) | st.text(max_size=10)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["request", "notification", "response", "error"]))
    msg: dict[str, Any] = {"jsonrpc": "2.0"}
    if kind in ("request", "notification"):
        msg["method"] = draw(st.text(max_size=20))
        if draw(st.booleans()):
            msg["params"] = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=4))
        if kind == "request":
            msg["id"] = draw(rpc_ids)
    elif kind == "response":
        msg["id"] = draw(rpc_ids)
        msg["result"] = draw(json_values)
    else:
        msg["id"] = draw(rpc_ids | st.none())
        msg["error"] = {"code": draw(st.integers(-(2**31), 2**31)), "message": draw(st.text())}
    return msg


def _only_frame_error(data: bytes) -> None:
    try:
        parsed = parse(data, max_depth=16)
    except FrameError:
        return
    items = parsed.message if isinstance(parsed.message, list) else [parsed.message]
    if any(isinstance(item, FrameError) for item in items):
        return  # invalid batch items are answered, not forwarded
    assert parse(parsed.wire, max_depth=16).message == parsed.message


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_frame_error(data: bytes) -> None:
    _only_frame_error(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_only_frame_error(value: Any) -> None:
    _only_frame_error(json.dumps(value).encode())


@settings(max_examples=300)
@given(messages(), st.data())
def test_mutated_messages_only_frame_error(msg: dict[str, Any], data: st.DataObject) -> None:
    raw = bytearray(json.dumps(msg).encode())
    for _ in range(data.draw(st.integers(1, 3))):
        if not raw:
            break
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.sampled_from(b'{}[]":,\\ \x00\xff0aeu'))
    _only_frame_error(bytes(raw))


@settings(max_examples=300)
@given(messages())
def test_round_trip(msg: dict[str, Any]) -> None:
    raw = json.dumps(msg, ensure_ascii=False).encode()
    parsed = parse(raw)
    assert json.loads(parsed.wire) == json.loads(raw)
    again = parse(parsed.wire)
    assert again.message == parsed.message
    assert again.wire == parsed.wire


@pytest.mark.usefixtures("json_counts")
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(json_values)
def test_duplicate_detection_agrees_with_exact_scan(value: Any) -> None:
    """The fast colon count and the exact object_pairs_hook scan agree, on
    documents with and without repeated keys (we splice one in)."""
    text = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "m", "params": {"v": value}})
    variants = [text]
    if '{"' in text[1:]:
        # Repeat the first member of the first nested object.
        i = text.index('{"', 1)
        j = text.index('"', i + 2)
        key = text[i + 1 : j + 1]
        variants.append(text[: i + 1] + key + ":0," + text[i + 1 :])
    for raw_text in variants:
        raw = raw_text.encode()
        exact = _duplicate_keys_exact(raw)
        try:
            parse_message(raw)
            refused = ""
        except FrameError as exc:
            refused = str(exc)
        assert exact == ("duplicate" in refused), refused


@pytest.mark.usefixtures("json_counts")
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.text(alphabet=':ab\\"', max_size=4), st.integers(), max_size=4))
def test_colons_in_keys_and_escaped_colons(params: dict[str, int]) -> None:
    raw = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "m", "params": params}).encode()
    for candidate in (raw, raw.replace(b":", b"\\u003a").replace(b'"\\u003a', b'":')):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        dup = _duplicate_keys_exact(candidate)
        try:
            msg = parse_message(candidate)
        except FrameError as exc:
            refused = str(exc)
        else:
            refused = ""
        if refused:
            assert dup or "duplicate" not in refused
            continue
        assert not dup
        assert msgspec.to_builtins(msg)["params"] == value["params"]


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


bracket_text = st.text(alphabet='[]{}"\\/nbx:', max_size=6)
nested = st.recursive(
    st.none() | st.integers() | bracket_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(bracket_text, children, max_size=3)
    ),
    max_leaves=40,
)


@settings(max_examples=400)
@given(nested, st.integers(1, 12))
def test_both_depth_methods_are_exact(value: Any, limit: int) -> None:
    from agentwall.core.jsonrpc import _brackets_too_deep, _value_too_deep

    raw = json.dumps(value, ensure_ascii=False).encode()
    expected = _depth(value) > limit
    assert _brackets_too_deep(raw, limit) == expected
    assert _value_too_deep(msgspec.json.decode(raw), limit) == expected
