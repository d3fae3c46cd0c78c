"""Sealing events into a chain, and verifying a chain line by line.

Sealing is a pure function of (key, tip, events, time): it returns the bytes
to append and the new tip, and changes nothing until the caller has made those
bytes durable and adopts the tip.  Verification is a streaming state machine:
``feed`` each line in file order, then ``finish``; the first damage found is
classified precisely (see ``DamageKind``), using as much of the rest of the
log as the classification needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import msgspec
import orjson

from agentwall.audit.record import (
    FORMAT_VERSION,
    GENESIS_MAC,
    HEAD_DECODER,
    MAC_PREFIX,
    MAC_SUFFIX_LEN,
    MacKey,
    format_ts,
    parse_head,
    split_line,
)
from agentwall.core.canonical import canonical_json
from agentwall.types import AuditEvent

DamageKind = Literal[
    "modified",  # an entry's bytes changed (or a line that is not an entry at all)
    "deleted",  # entries missing from the middle or the start
    "reordered",  # entries present, but out of order
    "inserted",  # a line that does not belong: forged, duplicated or from another chain
    "truncated",  # entries missing from the end (caught by the sealed head)
    "torn_tail",  # the last line is incomplete: a write interrupted by a crash
    "wrong_key",  # sealed with a key whose id is not among the keys given
    "head_missing",  # no sealed head to check the end against
    "head_invalid",  # the sealed head itself does not verify
]


class ChainTip(msgspec.Struct, frozen=True):
    """The last sealed entry: where the next one attaches."""

    seq: int
    mac: str

    @property
    def mac_raw(self) -> bytes:
        return bytes.fromhex(self.mac)


GENESIS: Final = ChainTip(0, GENESIS_MAC)

# canonical_json is orjson.dumps with sorted keys, falling back to the stdlib
# encoder for what orjson refuses (agentwall.core.canonical).
_dumps = orjson.dumps
_SORT_KEYS = orjson.OPT_SORT_KEYS


class SealedBatch(msgspec.Struct, frozen=True):
    data: bytes
    first_seq: int
    count: int
    tip: ChainTip
    # ``tip.mac`` as raw bytes: the next batch's MAC input, kept so the
    # writer need not parse the hex back (b"" when not known).
    tip_mac_raw: bytes = b""


def seal_fields(
    key: MacKey,
    tip: ChainTip,
    entries: Sequence[dict[str, Any]],
    ts_us: int,
    tip_mac_raw: bytes | None = None,
) -> SealedBatch:
    """Seal already-built field dicts (consumed) after ``tip``.

    The hot path of every durable write: ``entry_body``, ``MacKey.mac`` and
    ``sealed_line`` inlined (same bytes; tests/audit compares them).
    ``tip_mac_raw``, when given, must be ``bytes.fromhex(tip.mac)`` (the
    previous batch's ``SealedBatch.tip_mac_raw``).
    """
    ts = format_ts(ts_us)
    key_id = key.key_id
    inner0, outer0 = key.states()
    prev_hex = tip.mac
    prev_raw = bytes.fromhex(prev_hex) if tip_mac_raw is None else tip_mac_raw
    seq = tip.seq
    lines: list[bytes] = []
    append = lines.append
    for fields in entries:
        seq += 1
        fields["v"] = FORMAT_VERSION
        fields["seq"] = seq
        fields["ts"] = ts
        fields["key_id"] = key_id
        fields["prev"] = prev_hex
        try:
            # canonical_json's common case, inlined (this runs per entry).
            body = _dumps(fields, option=_SORT_KEYS)
        except (orjson.JSONEncodeError, TypeError):
            body = canonical_json(fields)
        inner = inner0.copy()
        inner.update(prev_raw)
        inner.update(body)
        outer = outer0.copy()
        outer.update(inner.digest())
        prev_raw = outer.digest()
        prev_hex = prev_raw.hex()
        # body without its final "}", then ,"mac":"<hex>"} and the newline.
        append(body[:-1])
        append(MAC_PREFIX)
        append(prev_hex.encode("ascii"))
        append(b'"}\n')
    return SealedBatch(
        b"".join(lines), tip.seq + 1, len(entries), ChainTip(seq, prev_hex), prev_raw
    )


def seal_batch(
    key: MacKey,
    tip: ChainTip,
    events: Sequence[AuditEvent],
    ts_us: int,
    tip_mac_raw: bytes | None = None,
) -> SealedBatch:
    to_builtins = msgspec.to_builtins
    return seal_fields(key, tip, [to_builtins(e) for e in events], ts_us, tip_mac_raw)


# --- verification ---------------------------------------------------------------------


class Damage(msgspec.Struct, frozen=True):
    kind: DamageKind
    seq: int | None
    message: str
    file: str | None = None
    line: int | None = None


class Notice(msgspec.Struct, frozen=True):
    """Something a reviewer should see that does not make the log invalid."""

    kind: str
    seq: int | None
    message: str


class HeadSeal(msgspec.Struct, frozen=True):
    """A verified sealed head: the writer vouches that the log reached here."""

    seq: int
    mac: str
    key_id: str


class VerifyReport(msgspec.Struct, frozen=True):
    valid: bool
    entries: int
    first_seq: int | None
    last_seq: int | None
    last_mac: str | None
    key_ids: tuple[str, ...]
    damage: Damage | None
    notices: tuple[Notice, ...]
    head_seq: int | None
    torn_tail: bool
    # The first entry's prev, and the mac of entry ``watch_seq`` when seen:
    # what it takes to join reports of consecutive pieces of one chain.
    first_prev: str | None = None
    watched_mac: str | None = None


def head_damage(
    head: HeadSeal, first_seq: int | None, last_seq: int | None, mac_at_head: str | None
) -> Damage | None:
    """What is wrong with a chain's end, given its sealed head."""
    if (last_seq or 0) < head.seq:
        return Damage(
            "truncated",
            (last_seq or 0) + 1,
            f"the sealed head says the log reached seq {head.seq}, but it ends at "
            f"{last_seq or 'nothing'}",
        )
    if head.seq > 0 and mac_at_head is not None and mac_at_head != head.mac:
        return Damage(
            "modified",
            head.seq,
            f"entry seq {head.seq} differs from the one the sealed head vouches for",
        )
    if head.seq > 0 and mac_at_head is None and (first_seq or 1) <= head.seq:
        return Damage(
            "modified",
            head.seq,
            f"entry seq {head.seq} that the sealed head vouches for was not seen",
        )
    return None


class _Suspect(msgspec.Struct):
    """A bad line whose classification waits for the line after it."""

    seq: int | None
    file: str | None
    line: int | None
    terminated: bool
    detail: str


class _Hunt(msgspec.Struct):
    """After a gap: is the missing seq somewhere later (reordered) or gone (deleted)?"""

    missing: int
    found_seq: int
    file: str | None
    line: int | None


class ChainVerifier:
    """Streaming verification of one chain, possibly spread over several files.

    ``partial`` accepts a chain that starts after seq 1 (older files archived);
    its first entry is then only checked against its own ``prev``.
    """

    def __init__(
        self,
        keys: Mapping[str, MacKey],
        *,
        head: HeadSeal | None = None,
        partial: bool = False,
        watch_seq: int | None = None,
    ) -> None:
        if not keys:
            raise ValueError("at least one key is needed to verify")
        self._keys = dict(keys)
        self._head = head
        self._partial = partial
        self._expected_seq = 1
        self._prev_raw = bytes(32)
        self._started = False
        self._entries = 0
        self._first_seq: int | None = None
        self._key_ids: list[str] = []
        self._notices: list[Notice] = []
        self._damage: Damage | None = None
        self._suspect: _Suspect | None = None
        self._hunt: _Hunt | None = None
        self._mac_at_head: str | None = None
        self._torn = False
        self._where: tuple[str | None, int | None] = (None, None)
        self._last_key_id: str | None = None
        self._first_prev: str | None = None
        self._watch = head.seq if head is not None else (watch_seq if watch_seq is not None else -1)

    @property
    def done(self) -> bool:
        """True once the verdict cannot change: the caller may stop feeding."""
        return self._damage is not None

    # The hot loop: one call per line, so locals and early exits matter.
    def feed(
        self,
        line: bytes,
        *,
        file: str | None = None,
        lineno: int | None = None,
        terminated: bool = True,
    ) -> None:
        if self._damage is not None:
            return
        if self._hunt is not None:
            self._feed_hunt(line)
            return
        if self._suspect is not None:
            self._resolve_suspect(line, file, lineno)
            return
        self._where = (file, lineno)
        cut = len(line) - MAC_SUFFIX_LEN
        if cut < 2 or not line.endswith(b'"}') or line[cut : cut + 8] != MAC_PREFIX:
            self._bad_line(None, terminated, "is not a sealed audit entry")
            return
        body = line[:cut] + b"}"
        try:
            head = HEAD_DECODER.decode(body)
        except msgspec.DecodeError:
            self._bad_line(None, terminated, "is not a sealed audit entry")
            return
        key = self._keys.get(head.key_id)
        if key is None:
            if self._entries and head.event != "key_changed":
                # Mid-chain, only a key change may switch keys: an unknown id on
                # any other entry is an edit of that entry.
                self._bad_line(head.seq, terminated, f"names unknown key id {head.key_id!r}")
            else:
                self._wrong_key(head.seq, head.key_id)
            return
        if not self._started:
            self._start(head.seq, head.prev)
        mac = key.mac(self._prev_raw, body)
        mac_hex = mac.hex()
        if mac_hex.encode("ascii") != line[cut + 8 : -2]:
            self._mismatch(key, head.seq, head.prev, body, line[cut + 8 : -2], terminated)
            return
        seq = head.seq
        if seq != self._expected_seq:
            if head.event == "recovery" and seq > self._expected_seq:
                self._fail(
                    "truncated",
                    self._expected_seq,
                    f"entries {self._expected_seq}..{seq - 1} were removed from the end of the "
                    f"log before a restart; recovery entry seq {seq} records it",
                )
            else:
                self._fail(
                    "modified", self._expected_seq, f"entry numbered {seq} sealed out of order"
                )
            return
        if head.key_id not in self._key_ids:
            self._key_ids.append(head.key_id)
        self._last_key_id = head.key_id
        if head.event != "decision":
            self._note_event(head.event, seq, body)
        if seq == self._watch:
            self._mac_at_head = mac_hex
        self._prev_raw = mac
        self._expected_seq = seq + 1
        self._entries += 1

    def feed_many(
        self,
        lines: Sequence[bytes],
        *,
        file: str | None = None,
        first_lineno: int = 1,
        last_terminated: bool = True,
    ) -> None:
        """Feed consecutive lines: the same verdict as ``feed`` line by line.

        Ordinary entries (a decision, sealed with the key of the entry before,
        in sequence) take an inlined loop; anything else, including every
        failure, goes through ``feed``, which owns the semantics.
        """
        count = len(lines)
        # The fast loop never sees an unterminated last line (a torn tail).
        fast_stop = count if last_terminated else count - 1
        i = 0
        while i < count and self._damage is None:
            if i < fast_stop and self._suspect is None and self._hunt is None:
                i = self._fast(lines, i, fast_stop)
                if i >= count:
                    break
            terminated = last_terminated or i < count - 1
            self.feed(lines[i], file=file, lineno=first_lineno + i, terminated=terminated)
            i += 1

    def _fast(self, lines: Sequence[bytes], start: int, stop: int) -> int:
        """Verify ordinary entries from ``start``; return the index of the
        first line left for ``feed`` (``stop`` when none)."""
        key_id = self._last_key_id
        if key_id is None or not self._started:
            return start
        inner0, outer0 = self._keys[key_id].states()
        decode = HEAD_DECODER.decode
        prev_raw = self._prev_raw
        expected = self._expected_seq
        watch = self._watch
        prefix = MAC_PREFIX
        i = start
        while i < stop:
            line = lines[i]
            cut = len(line) - MAC_SUFFIX_LEN
            if cut < 2 or line[cut : cut + 8] != prefix or line[-2:] != b'"}':
                break
            body = line[:cut] + b"}"
            try:
                head = decode(body)
            except msgspec.DecodeError:
                break
            if (
                head.seq != expected
                or head.seq == watch
                or head.key_id != key_id
                or head.event != "decision"
            ):
                break
            inner = inner0.copy()
            inner.update(prev_raw)
            inner.update(body)
            outer = outer0.copy()
            outer.update(inner.digest())
            mac = outer.digest()
            if mac.hex().encode("ascii") != line[cut + 8 : -2]:
                break
            prev_raw = mac
            expected += 1
            i += 1
        self._entries += expected - self._expected_seq
        self._prev_raw = prev_raw
        self._expected_seq = expected
        return i

    def _start(self, seq: int, prev: str) -> None:
        self._started = True
        self._first_prev = prev
        if self._partial:
            try:
                self._prev_raw = bytes.fromhex(prev)
            except ValueError:
                self._prev_raw = bytes(32)
            self._expected_seq = seq
        self._first_seq = self._expected_seq

    def _fail(
        self,
        kind: DamageKind,
        seq: int | None,
        message: str,
        where: tuple[str | None, int | None] | None = None,
    ) -> None:
        file, line = where if where is not None else self._where
        self._damage = Damage(kind, seq, message, file, line)

    def _wrong_key(self, seq: int, key_id: str) -> None:
        known = ", ".join(sorted(self._keys))
        self._fail(
            "wrong_key",
            seq,
            f"entry seq {seq} was sealed with key id {key_id}; the key(s) given have id {known}",
        )

    def _bad_line(self, seq: int | None, terminated: bool, detail: str) -> None:
        file, lineno = self._where
        self._suspect = _Suspect(seq, file, lineno, terminated, detail)

    def _mismatch(
        self, key: MacKey, seq: int, prev: str, body: bytes, mac_hex: bytes, terminated: bool
    ) -> None:
        expected = self._expected_seq
        try:
            own_prev = bytes.fromhex(prev)
        except ValueError:
            own_prev = None
        genuine = own_prev is not None and key.mac(own_prev, body).hex().encode() == mac_hex
        if not genuine:
            # Forged or edited.  Whether it was slipped in before a genuine entry
            # or replaced one shows in the next line.
            self._bad_line(seq, terminated, "does not match its MAC")
            return
        if seq > expected:
            self._hunt = _Hunt(expected, seq, *self._where)
        elif seq < expected:
            self._fail(
                "inserted",
                expected,
                f"a copy of entry seq {seq} appears where seq {expected} belongs",
            )
        else:
            self._fail(
                "inserted",
                expected,
                f"entry seq {seq} is genuine but belongs to a "
                "different chain (its prev does not match)",
            )

    def _resolve_suspect(self, line: bytes, file: str | None, lineno: int | None) -> None:
        suspect = self._suspect
        assert suspect is not None
        where = (suspect.file, suspect.line)
        expected = self._expected_seq
        if self._continues_chain(line, expected):
            self._fail(
                "inserted",
                expected,
                f"a line that is not a sealed entry ({suspect.detail}) "
                f"was inserted before seq {expected}",
                where,
            )
        else:
            self._fail("modified", expected, f"entry seq {expected} {suspect.detail}", where)

    def _continues_chain(self, line: bytes, seq: int) -> bool:
        parts = split_line(line)
        if parts is None:
            return False
        body, mac_hex = parts
        head = parse_head(body)
        if head is None or head.seq != seq:
            return False
        key = self._keys.get(head.key_id)
        return key is not None and key.mac(self._prev_raw, body).hex().encode() == mac_hex

    def _feed_hunt(self, line: bytes) -> None:
        hunt = self._hunt
        assert hunt is not None
        # Only the seq is needed; a damaged line simply does not count.
        parts = split_line(line)
        if parts is None:
            return
        head = parse_head(parts[0])
        if head is not None and head.seq == hunt.missing:
            self._fail(
                "reordered",
                hunt.missing,
                f"entry seq {hunt.missing} is out of place: "
                f"seq {hunt.found_seq} stands where it belongs",
                (hunt.file, hunt.line),
            )

    def _note_event(self, event: str, seq: int, body: bytes) -> None:
        if event not in ("recovery", "key_changed"):
            return
        detail: Any = orjson.loads(body).get("detail") or {}
        if event == "recovery":
            what = detail.get("kind", "unknown")
            message = str(detail.get("message") or f"recovery: {what}")
            self._notices.append(Notice(f"recovery:{what}", seq, message))
        else:
            self._notices.append(
                Notice(
                    "key_changed",
                    seq,
                    f"key changed from {detail.get('old_key_id')} to {detail.get('new_key_id')}",
                )
            )

    def finish(self) -> VerifyReport:
        if self._damage is None and self._hunt is not None:
            hunt = self._hunt
            self._fail(
                "deleted",
                hunt.missing,
                f"entries {hunt.missing}..{hunt.found_seq - 1} are missing",
                (hunt.file, hunt.line),
            )
        if self._damage is None and self._suspect is not None:
            suspect = self._suspect
            where = (suspect.file, suspect.line)
            last = self._expected_seq - 1
            if not suspect.terminated:
                self._torn = True
                self._notices.append(
                    Notice(
                        "torn_tail",
                        None,
                        f"the last line (after seq {last}) is "
                        "incomplete: a write interrupted by a crash, never "
                        "acknowledged; the writer records it at its next start",
                    )
                )
            elif self._head is not None and self._head.seq <= last:
                self._fail(
                    "inserted",
                    self._expected_seq,
                    "a line that is not a sealed entry "
                    f"({suspect.detail}) was appended after the sealed head",
                    where,
                )
            else:
                self._fail(
                    "modified",
                    self._expected_seq,
                    f"entry seq {self._expected_seq} {suspect.detail}",
                    where,
                )
        head = self._head
        last_seq = self._expected_seq - 1 if self._entries else None
        if self._damage is None and head is not None:
            self._damage = head_damage(head, self._first_seq, last_seq, self._mac_at_head)
        return VerifyReport(
            valid=self._damage is None,
            entries=self._entries,
            first_seq=self._first_seq if self._entries else None,
            last_seq=last_seq,
            last_mac=self._prev_raw.hex() if self._entries else None,
            key_ids=tuple(self._key_ids),
            damage=self._damage,
            notices=tuple(self._notices),
            head_seq=head.seq if head is not None else None,
            torn_tail=self._torn,
            first_prev=self._first_prev,
            watched_mac=self._mac_at_head,
        )


__all__ = [
    "GENESIS",
    "ChainTip",
    "ChainVerifier",
    "Damage",
    "DamageKind",
    "HeadSeal",
    "Notice",
    "SealedBatch",
    "VerifyReport",
    "head_damage",
    "seal_batch",
    "seal_fields",
]
