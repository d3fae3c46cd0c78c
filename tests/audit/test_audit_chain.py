"""Sealing and verification on in-memory lines: every kind of damage is
detected, and classified as precisely as the evidence allows."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentwall.audit.chain import (
    GENESIS,
    ChainTip,
    ChainVerifier,
    HeadSeal,
    VerifyReport,
    seal_batch,
)
from agentwall.audit.record import MacKey
from agentwall.types import AuditEvent

KEY = MacKey(b"\x01" * 32)
OTHER = MacKey(b"\x02" * 32)


def _event(i: int) -> AuditEvent:
    return AuditEvent(
        event="decision",
        session="s",
        call_id=f"c{i}",
        method="tools/call",
        target="t",
        decision="allow",
        latency_us=i,
    )


def sealed(n: int, key: MacKey = KEY, tip: ChainTip = GENESIS) -> tuple[list[bytes], ChainTip]:
    lines: list[bytes] = []
    for i in range(n):
        batch = seal_batch(key, tip, [_event(i)], 1_700_000_000_000_000 + i)
        lines.append(batch.data)
        tip = batch.tip
    return lines, tip


def verify(
    lines: list[bytes],
    *,
    keys: tuple[MacKey, ...] = (KEY,),
    head: HeadSeal | None = None,
    partial: bool = False,
) -> VerifyReport:
    """Verify line by line and in batches; both must reach the same verdict."""
    data = b"".join(lines)
    parts = data.split(b"\n")
    last = parts.pop()
    key_map = {k.key_id: k for k in keys}
    one = ChainVerifier(key_map, head=head, partial=partial)
    for i, line in enumerate(parts):
        one.feed(line, file="mem", lineno=i + 1)
    if last:
        one.feed(last, file="mem", lineno=len(parts) + 1, terminated=False)
    batched = ChainVerifier(key_map, head=head, partial=partial)
    rows = [*parts, last] if last else parts
    # uneven batches, so that batch edges fall everywhere
    start, size = 0, 1
    while start < len(rows):
        chunk = rows[start : start + size]
        is_last = start + size >= len(rows)
        batched.feed_many(
            chunk, file="mem", first_lineno=start + 1, last_terminated=not (is_last and bool(last))
        )
        start += size
        size = size % 4 + 1
    report = one.finish()
    assert batched.finish() == report
    return report


def head_of(tip: ChainTip) -> HeadSeal:
    return HeadSeal(tip.seq, tip.mac, KEY.key_id)


def test_a_sealed_chain_verifies() -> None:
    lines, tip = sealed(20)
    report = verify(lines, head=head_of(tip))
    assert report.valid
    assert report.entries == 20
    assert report.last_seq == 20
    assert report.last_mac == tip.mac
    assert report.first_seq == 1


def test_batches_chain_like_single_entries() -> None:
    batch = seal_batch(KEY, GENESIS, [_event(i) for i in range(5)], 0)
    assert batch.first_seq == 1
    assert batch.count == 5
    assert batch.tip.seq == 5
    report = verify([batch.data], head=head_of(batch.tip))
    assert report.valid
    assert report.entries == 5


def flip(lines: list[bytes], index: int, offset: int) -> list[bytes]:
    line = bytearray(lines[index])
    line[offset] ^= 0x01
    return [*lines[:index], bytes(line), *lines[index + 1 :]]


Tamper = Callable[[list[bytes]], list[bytes]]

CASES: list[tuple[str, Tamper, str, int | None]] = [
    ("flip a byte in a body", lambda ls: flip(ls, 4, 30), "modified", 5),
    ("flip a byte in the mac", lambda ls: flip(ls, 4, len(ls[4]) - 10), "modified", 5),
    ("flip a byte in the mac prefix", lambda ls: flip(ls, 4, len(ls[4]) - 72), "modified", 5),
    (
        "flip the seq",
        lambda ls: [*ls[:4], ls[4].replace(b'"seq":5', b'"seq":6'), *ls[5:]],
        "modified",
        5,
    ),
    ("delete a line", lambda ls: ls[:4] + ls[5:], "deleted", 5),
    ("delete the first line", lambda ls: ls[1:], "deleted", 1),
    ("swap two lines", lambda ls: [*ls[:4], ls[5], ls[4], *ls[6:]], "reordered", 5),
    ("move a line later", lambda ls: [*ls[:2], *ls[3:8], ls[2], *ls[8:]], "reordered", 3),
    ("duplicate a line", lambda ls: [*ls[:5], ls[3], *ls[5:]], "inserted", 6),
    ("insert a forged line", lambda ls: [*ls[:5], flip(ls, 5, 30)[5], *ls[5:]], "inserted", 6),
    ("insert garbage", lambda ls: [*ls[:5], b"hello\n", *ls[5:]], "inserted", 6),
    (
        "append a forged line",
        lambda ls: [*ls, flip(ls, 9, 30)[9].replace(b'"seq":10', b'"seq":11')],
        "inserted",
        11,
    ),
    ("truncate the tail", lambda ls: ls[:7], "truncated", 8),
    ("cut into the last line", lambda ls: [*ls[:9], ls[9][:50]], "truncated", 10),
    ("empty the log", lambda ls: [], "truncated", 1),
    (
        "edit the key id",
        lambda ls: [*ls[:3], ls[3].replace(KEY.key_id.encode(), b"f" * 16), *ls[4:]],
        "modified",
        4,
    ),
]


@pytest.mark.parametrize(
    ("tamper", "kind", "seq"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_tampering_is_detected_and_classified(tamper: Tamper, kind: str, seq: int | None) -> None:
    lines, tip = sealed(10)
    report = verify(tamper(lines), head=head_of(tip))
    assert not report.valid
    assert report.damage is not None
    assert (report.damage.kind, report.damage.seq) == (kind, seq), report.damage


def test_splice_from_another_chain_with_the_same_key() -> None:
    ours, tip = sealed(6)
    theirs, _ = sealed(6, tip=ChainTip(0, "1" * 64))
    report = verify([*ours[:3], theirs[3], *ours[4:]], head=head_of(tip))
    assert report.damage is not None
    assert report.damage.kind == "inserted"


def test_wrong_key() -> None:
    lines, _tip = sealed(5)
    report = verify(lines, keys=(OTHER,))
    assert report.damage is not None
    assert report.damage.kind == "wrong_key"
    assert report.damage.seq == 1
    assert KEY.key_id in report.damage.message


def test_torn_last_line_is_reported_not_fatal() -> None:
    lines, tip = sealed(5)
    extra, _ = sealed(6)
    torn = [*lines, extra[5][:40]]
    report = verify(torn, head=head_of(tip))
    assert report.valid
    assert report.torn_tail
    assert [n.kind for n in report.notices] == ["torn_tail"]


def test_without_a_head_truncation_is_invisible_which_is_why_the_head_exists() -> None:
    lines, _ = sealed(10)
    assert verify(lines[:7]).valid


def test_partial_chain_starts_anywhere() -> None:
    lines, tip = sealed(10)
    assert not verify(lines[4:]).valid
    report = verify(lines[4:], partial=True, head=head_of(tip))
    assert report.valid
    assert report.first_seq == 5
    assert report.entries == 6


def test_key_change_needs_both_keys() -> None:
    first, tip = sealed(3)
    change = seal_batch(
        OTHER,
        tip,
        [
            AuditEvent(
                event="key_changed", detail={"old_key_id": KEY.key_id, "new_key_id": OTHER.key_id}
            )
        ],
        0,
    )
    later = seal_batch(OTHER, change.tip, [_event(9)], 0)
    lines = [*first, change.data, later.data]
    both = verify(lines, keys=(KEY, OTHER))
    assert both.valid
    assert both.key_ids == (KEY.key_id, OTHER.key_id)
    assert [n.kind for n in both.notices] == ["key_changed"]
    only_old = verify(lines, keys=(KEY,))
    assert only_old.damage is not None
    assert only_old.damage.kind == "wrong_key"
    assert only_old.damage.seq == 4


def test_head_that_disagrees_with_the_log() -> None:
    lines, _tip = sealed(10)
    report = verify(lines, head=HeadSeal(10, "ab" * 32, KEY.key_id))
    assert report.damage is not None
    assert report.damage.kind == "modified"


TAMPERS = st.sampled_from(["flip", "delete", "swap", "duplicate", "forge", "truncate"])


@settings(max_examples=150, deadline=None)
@given(op=TAMPERS, a=st.integers(0, 10_000), b=st.integers(0, 10_000), n=st.integers(2, 12))
def test_random_tampering_is_always_detected(op: str, a: int, b: int, n: int) -> None:
    lines, tip = sealed(n)
    if op == "flip":
        i = a % n
        tampered = flip(lines, i, b % len(lines[i]))
    elif op == "delete":
        i = a % n
        tampered = lines[:i] + lines[i + 1 :]
    elif op == "swap":
        i, j = sorted((a % n, b % n))
        if i == j:
            j = (i + 1) % n
            i, j = sorted((i, j))
        tampered = [*lines[:i], lines[j], *lines[i + 1 : j], lines[i], *lines[j + 1 :]]
    elif op == "duplicate":
        tampered = [*lines[: b % (n + 1)], lines[a % n], *lines[b % (n + 1) :]]
    elif op == "forge":
        i = a % n
        forged = flip(lines, i, b % (len(lines[i]) - 1))[i]
        tampered = [*lines[: b % (n + 1)], forged, *lines[b % (n + 1) :]]
    else:
        data = b"".join(lines)
        tampered = [data[: a % len(data)]]
    report = verify(tampered, head=head_of(tip))
    assert not report.valid, (op, report)
