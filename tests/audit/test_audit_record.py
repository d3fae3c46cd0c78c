from __future__ import annotations

import hashlib
import hmac
import os

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentwall.audit.record import (
    MAC_SUFFIX_LEN,
    MacKey,
    decision_event,
    entry_body,
    format_ts,
    key_id_for,
    sealed_line,
    split_line,
)
from agentwall.core.canonical import canonical_json, sha256_hex
from agentwall.errors import ConfigError
from agentwall.types import AuditEvent, Call, Decision, Identity


@given(
    key=st.binary(min_size=32, max_size=200),
    prev=st.binary(min_size=32, max_size=32),
    body=st.binary(max_size=600),
)
def test_mackey_is_hmac_sha256(key: bytes, prev: bytes, body: bytes) -> None:
    assert MacKey(key).mac(prev, body) == hmac.digest(key, prev + body, hashlib.sha256)


def test_short_key_is_refused() -> None:
    with pytest.raises(ConfigError):
        MacKey(b"x" * 31)


def test_key_id_names_but_does_not_reveal() -> None:
    key = os.urandom(32)
    kid = key_id_for(key)
    assert len(kid) == 16
    assert kid == key_id_for(key)
    assert kid not in key.hex()
    assert kid != key_id_for(os.urandom(32))


def test_format_ts_is_utc_microseconds() -> None:
    assert format_ts(0) == "1970-01-01T00:00:00.000000Z"
    assert format_ts(1_700_000_000_123_456) == "2023-11-14T22:13:20.123456Z"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(params=json_values, reason=st.text())
def test_line_is_canonical_body_plus_mac(params: object, reason: str) -> None:
    key = MacKey(b"k" * 32)
    body = entry_body(
        {"event": "decision", "params": params, "reason": reason},
        seq=7,
        ts="t",
        key_id=key.key_id,
        prev="0" * 64,
    )
    mac = key.mac(bytes(32), body)
    line = sealed_line(body, mac)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    parts = split_line(line[:-1])
    assert parts == (body, mac.hex().encode())
    # The body is exactly the canonical form of the parsed entry minus mac,
    # so a verifier may either cut the suffix or re-encode.
    parsed = orjson.loads(line) if not _has_big_int(params) else None
    if parsed is not None:
        assert parsed.pop("mac") == mac.hex()
        assert canonical_json(parsed) == body
    assert len(line) - 1 - len(body) + 1 == MAC_SUFFIX_LEN


def _has_big_int(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) >= 2**63
    if isinstance(value, list):
        return any(_has_big_int(v) for v in value)
    if isinstance(value, dict):
        return any(_has_big_int(v) for v in value.values())
    return False


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"{}",
        b'{"a":1}',
        b"x" * 200,
        b'{"a":1,"mac":"' + b"G" * 64 + b'"}',
        b'{"a":1,"max":"' + b"0" * 64 + b'"}',
    ],
)
def test_split_line_refuses_shapes_that_are_not_entries(bad: bytes) -> None:
    assert split_line(bad) is None


def _call(params: object) -> Call:
    return Call(
        call_id="c-1",
        session="s-1",
        transport="http",
        origin="client",
        kind="request",
        rpc_id=3,
        method="tools/call",
        target="read_file",
        params=params,
        params_json=canonical_json(params),
        identity=Identity(subject="alice", issuer="https://idp"),
    )


def _decision(verdict: str = "deny") -> Decision:
    return Decision(
        call_id="c-1",
        verdict=verdict,
        rule_id="r1",
        reason="no",  # type: ignore[arg-type]
        pointer="/arguments/path",
        policy_hash="ab" * 32,
        category="sensitive_path",
    )


def test_decision_event_digests_canonical_params_and_omits_them() -> None:
    params = {"name": "read_file", "arguments": {"path": "/etc/shadow"}}
    event = decision_event(_call(params), _decision(), latency_us=42)
    assert event.args_sha256 == sha256_hex(canonical_json(params))
    assert event.params is None
    assert event.masked == ()
    assert event.subject == "alice"
    assert event.issuer == "https://idp"
    assert event.decision == "deny"
    assert event.category == "sensitive_path"
    dry = decision_event(_call(params), _decision(), latency_us=42, dry_run=True)
    assert dry.decision == "dry_run_deny"
    allowed = decision_event(_call(params), _decision("allow"), latency_us=1, dry_run=True)
    assert allowed.decision == "allow"


def test_log_params_masks_secrets() -> None:
    secret = "ghp_" + "a1B2" * 9
    params = {"name": "x", "arguments": {"token": secret, "path": "/workspace/a"}}
    event = decision_event(_call(params), _decision(), latency_us=1, log_params=True)
    assert secret not in orjson.dumps(event.params).decode()
    assert event.params["arguments"]["path"] == "/workspace/a"
    assert "/arguments/token" in event.masked
    assert event.args_sha256 == sha256_hex(canonical_json(params))


# --- the sealing fast path against the documented construction --------------------

_texts = st.text(max_size=40)
_events = st.builds(
    AuditEvent,
    event=st.sampled_from(["decision", "error", "proxy_start"]),
    session=st.none() | _texts,
    transport=st.none() | st.sampled_from(["http", "stdio"]),
    rpc_id=st.none() | st.integers(-(2**70), 2**70) | _texts,
    method=st.none() | _texts,
    target=st.none() | _texts,
    decision=st.none() | st.sampled_from(["allow", "deny"]),
    reason=st.none() | _texts,
    latency_us=st.none() | st.integers(0, 2**40),
    cached=st.booleans(),
    params=json_values,
    masked=st.lists(_texts, max_size=3).map(tuple),
    detail=st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=3),
)


@given(
    events=st.lists(_events, min_size=1, max_size=4),
    seq=st.integers(0, 2**40),
    prev=st.binary(min_size=32, max_size=32),
    ts_us=st.integers(0, 4_102_444_800_000_000),
)
def test_seal_batch_is_the_documented_construction(
    events: list[AuditEvent], seq: int, prev: bytes, ts_us: int
) -> None:
    """``seal_batch`` inlines entry_body / MAC / sealed_line for speed; its
    bytes must be exactly docs/audit.md's construction, done the slow way."""
    from datetime import UTC, datetime

    from agentwall.audit.chain import ChainTip, seal_batch

    raw_key = b"\x07" * 32
    batch = seal_batch(MacKey(raw_key), ChainTip(seq, prev.hex()), events, ts_us)
    ts = datetime.fromtimestamp(ts_us // 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    ts += f".{ts_us % 1_000_000:06d}Z"
    expected = b""
    prev_hex = prev.hex()
    for i, event in enumerate(events):
        body = entry_body(
            msgspec.to_builtins(event),
            seq=seq + 1 + i,
            ts=ts,
            key_id=key_id_for(raw_key),
            prev=prev_hex,
        )
        mac = hmac.digest(raw_key, bytes.fromhex(prev_hex) + body, hashlib.sha256)
        expected += body[:-1] + b',"mac":"' + mac.hex().encode() + b'"}\n'
        prev_hex = mac.hex()
    assert batch.data == expected
    assert (batch.first_seq, batch.count) == (seq + 1, len(events))
    assert (batch.tip.seq, batch.tip.mac) == (seq + len(events), prev_hex)


@given(ts_us=st.lists(st.integers(0, 4_102_444_800_000_000), min_size=1, max_size=5))
def test_format_ts_matches_datetime_across_seconds(ts_us: list[int]) -> None:
    from datetime import UTC, datetime

    for value in ts_us + [t + 1 for t in ts_us] + [t - t % 1_000_000 for t in ts_us]:
        expected = datetime.fromtimestamp(value // 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        assert format_ts(value) == f"{expected}.{value % 1_000_000:06d}Z"
