"""The sealed head: a small file beside the log that vouches for its end.

Removing whole entries from the end of a hash chain leaves a shorter chain
that still verifies.  The head closes that gap: after every durable batch the
writer seals ``(seq, mac)`` of the last entry with the audit key, so a log
that ends before the head's seq, or whose entry at that seq differs, is caught.

Layout: two 256-byte slots (offsets 0 and 256), written alternately in place,
each one line of JSON padded with spaces::

    {"key_id":…,"mac":…,"seq":…,"v":1,"hmac":"<64 hex>"}

    hmac = HMAC-SHA256(key, "agentwall-audit-head\\0" || canonical(slot without hmac))

A torn slot write leaves the other slot intact; readers take the valid slot
with the highest seq.  What the head cannot do is documented in docs/audit.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec

from agentwall.audit.chain import ChainTip, HeadSeal
from agentwall.audit.record import MacKey
from agentwall.core.canonical import canonical_json

SLOT_SIZE: Final = 256
HEAD_SIZE: Final = 2 * SLOT_SIZE
HEAD_DOMAIN: Final = b"agentwall-audit-head\x00"
_HMAC_PREFIX: Final = b',"hmac":"'


class HeadProblem(msgspec.Struct, frozen=True):
    kind: str  # "head_missing" | "head_invalid" | "wrong_key"
    message: str


class _Slot(msgspec.Struct, frozen=True):
    v: int
    seq: int
    mac: str
    key_id: str


_SLOT_DECODER: Final = msgspec.json.Decoder(_Slot)


def head_slot(key: MacKey, tip: ChainTip) -> bytes:
    body = canonical_json({"v": 1, "seq": tip.seq, "mac": tip.mac, "key_id": key.key_id})
    tag = key.mac(HEAD_DOMAIN, body).hex().encode("ascii")
    line = body[:-1] + _HMAC_PREFIX + tag + b'"}'
    return line.ljust(SLOT_SIZE - 1, b" ") + b"\n"


def slot_offset(generation: int) -> int:
    return (generation % 2) * SLOT_SIZE


def read_head(data: bytes, keys: Mapping[str, MacKey]) -> HeadSeal | HeadProblem:
    """The newest valid slot of a head file's bytes."""
    if not data.strip():
        return HeadProblem("head_missing", "the sealed head is empty")
    best: HeadSeal | None = None
    unknown_key: str | None = None
    for offset in (0, SLOT_SIZE):
        raw = data[offset : offset + SLOT_SIZE].rstrip(b" \n")
        if not raw:
            continue
        cut = raw.rfind(_HMAC_PREFIX)
        if cut < 0 or not raw.endswith(b'"}'):
            continue
        body = raw[:cut] + b"}"
        tag = raw[cut + len(_HMAC_PREFIX) : -2]
        try:
            slot = _SLOT_DECODER.decode(body)
        except msgspec.DecodeError:
            continue
        key = keys.get(slot.key_id)
        if key is None:
            unknown_key = slot.key_id
            continue
        if key.mac(HEAD_DOMAIN, body).hex().encode("ascii") != tag:
            continue
        if canonical_json(msgspec.to_builtins(slot)) != body:
            continue
        if best is None or slot.seq > best.seq:
            best = HeadSeal(slot.seq, slot.mac, slot.key_id)
    if best is not None:
        return best
    if unknown_key is not None:
        return HeadProblem(
            "wrong_key",
            f"the sealed head was sealed with key id {unknown_key}, "
            "which is not among the keys given",
        )
    return HeadProblem("head_invalid", "no slot of the sealed head verifies: it was modified")


__all__ = ["HEAD_SIZE", "SLOT_SIZE", "HeadProblem", "head_slot", "read_head", "slot_offset"]
