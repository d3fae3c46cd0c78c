from __future__ import annotations

from agentwall.audit.chain import ChainTip, HeadSeal
from agentwall.audit.head import HEAD_SIZE, SLOT_SIZE, HeadProblem, head_slot, read_head
from agentwall.audit.record import MacKey

KEY = MacKey(b"\x05" * 32)
KEYS = {KEY.key_id: KEY}


def _file(*slots: bytes) -> bytes:
    data = b"".join(slots)
    return data.ljust(HEAD_SIZE, b" ")


def test_newest_valid_slot_wins() -> None:
    old = head_slot(KEY, ChainTip(4, "a" * 64))
    new = head_slot(KEY, ChainTip(9, "b" * 64))
    assert len(old) == SLOT_SIZE
    assert old.endswith(b"\n")
    assert read_head(_file(old, new), KEYS) == HeadSeal(9, "b" * 64, KEY.key_id)
    assert read_head(_file(new, old), KEYS) == HeadSeal(9, "b" * 64, KEY.key_id)


def test_a_torn_slot_falls_back_to_the_other() -> None:
    old = head_slot(KEY, ChainTip(4, "a" * 64))
    torn = head_slot(KEY, ChainTip(9, "b" * 64))[:100] + b"\0" * (SLOT_SIZE - 100)
    assert read_head(_file(old, torn), KEYS) == HeadSeal(4, "a" * 64, KEY.key_id)


def test_an_edited_head_is_invalid() -> None:
    slot = head_slot(KEY, ChainTip(9, "b" * 64)).replace(b'"seq":9', b'"seq":3')
    problem = read_head(_file(slot), KEYS)
    assert isinstance(problem, HeadProblem)
    assert problem.kind == "head_invalid"


def test_missing_and_wrong_key() -> None:
    assert isinstance(read_head(b"", KEYS), HeadProblem)
    other = MacKey(b"\x06" * 32)
    problem = read_head(_file(head_slot(other, ChainTip(1, "c" * 64))), KEYS)
    assert isinstance(problem, HeadProblem)
    assert problem.kind == "wrong_key"
