"""Resuming a chain at start-up, decided on bytes already read.

``scan_tail`` finds the last line of a file that is a sealed entry (verified
when it was sealed with the current key) and everything after it.
``plan_recovery`` compares that with the sealed head and says where the chain
resumes, what to cut, and which recovery entries to write first, or refuses
(``AuditError``) when resuming would paper over damage to sealed entries.

Cutting is only ever allowed beyond the head: bytes after the last good entry
come from a batch whose write was interrupted, which was therefore never
acknowledged.  They are recorded (length, sha256, the first 4 KiB) in a
recovery entry, never silently dropped.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Final

import msgspec

from agentwall.audit.chain import GENESIS, ChainTip, HeadSeal
from agentwall.audit.head import HeadProblem
from agentwall.audit.record import GENESIS_MAC, MacKey, parse_head, split_line
from agentwall.errors import AuditError

CUT_EXCERPT_BYTES: Final = 4096


class TailScan(msgspec.Struct, frozen=True):
    """The last good entry of a file and what follows it.

    ``tip`` is None when no good entry was found in the bytes scanned.
    ``good_end`` is the file offset just after the good entry's newline (0
    when there is none), ``cut`` the bytes from there to the end of file.
    ``verified`` is False when the tip was sealed with another key (a key
    change), so only its shape could be checked.
    """

    tip: ChainTip | None
    key_id: str | None
    good_end: int
    cut: bytes
    verified: bool


def scan_tail(window: bytes, window_start: int, key: MacKey) -> TailScan | None:
    """Scan the last bytes of a file.  Returns None when the window holds no
    good entry but does not reach the start of the file (read more)."""
    end = len(window)
    nl = window.rfind(b"\n")
    while nl >= 0:
        start = window.rfind(b"\n", 0, nl) + 1
        if start == 0 and window_start > 0:
            return None  # this line may begin before the window
        found = _good_entry(window[start:nl], key)
        if found is not None:
            tip, key_id, verified = found
            return TailScan(tip, key_id, window_start + nl + 1, window[nl + 1 : end], verified)
        nl = start - 1
    if window_start > 0:
        return None
    return TailScan(None, None, 0, window, False)


def _good_entry(line: bytes, key: MacKey) -> tuple[ChainTip, str, bool] | None:
    parts = split_line(line)
    if parts is None:
        return None
    body, mac_hex = parts
    head = parse_head(body)
    if head is None:
        return None
    tip = ChainTip(head.seq, mac_hex.decode("ascii"))
    if head.key_id != key.key_id:
        return tip, head.key_id, False
    try:
        prev = bytes.fromhex(head.prev)
    except ValueError:
        return None
    if key.mac(prev, body).hex().encode("ascii") != mac_hex:
        return None
    return tip, head.key_id, True


class RecoveryPlan(msgspec.Struct, frozen=True):
    """Where to resume: seal the startup ``entries`` after ``tip``, having
    first truncated the active file to ``truncate_to`` when it is not None."""

    tip: ChainTip
    truncate_to: int | None
    entries: tuple[dict[str, Any], ...]
    notes: tuple[str, ...]


def _recovery(kind: str, message: str, **detail: Any) -> dict[str, Any]:
    return {"event": "recovery", "detail": {"kind": kind, "message": message, **detail}}


def plan_recovery(
    scan: TailScan | None,
    head: HeadSeal | HeadProblem,
    key: MacKey,
    *,
    active_name: str,
) -> RecoveryPlan:
    """``scan`` is the tail of the file holding the newest entry (None for a
    log with no files at all); ``head`` what the head file says."""
    entries: list[dict[str, Any]] = []
    notes: list[str] = []
    truncate_to: int | None = None
    tip = scan.tip if scan is not None and scan.tip is not None else GENESIS
    sealed = head if isinstance(head, HeadSeal) else None

    if scan is not None and scan.cut:
        if sealed is not None and sealed.seq > tip.seq:
            raise AuditError(
                f"{active_name}: the sealed head vouches for entries up to seq {sealed.seq}, "
                f"but the log's last good entry is seq {tip.seq} and what follows it does not "
                "verify; the log was damaged. Run `agentwall verify-log`, and move the log "
                "aside to start a new chain."
            )
        cut = scan.cut
        truncate_to = scan.good_end
        message = (
            f"cut {len(cut)} bytes of an interrupted, never acknowledged write after "
            f"seq {tip.seq} at offset {scan.good_end} of {active_name}"
        )
        entries.append(
            _recovery(
                "torn_tail",
                message,
                file=active_name,
                offset=scan.good_end,
                length=len(cut),
                after_seq=tip.seq,
                sha256=hashlib.sha256(cut).hexdigest(),
                excerpt_b64=base64.b64encode(cut[:CUT_EXCERPT_BYTES]).decode("ascii"),
            )
        )
        notes.append(message)

    if scan is not None and scan.tip is not None and scan.key_id != key.key_id:
        entries.insert(
            0,
            {
                "event": "key_changed",
                "detail": {"old_key_id": scan.key_id, "new_key_id": key.key_id},
            },
        )
        notes.append(f"audit key changed from {scan.key_id} to {key.key_id}")

    if sealed is not None:
        if sealed.seq > tip.seq:
            message = (
                f"the sealed head vouches for entries up to seq {sealed.seq} but the log "
                f"ends at seq {tip.seq}: entries {tip.seq + 1}..{sealed.seq} were removed"
            )
            entries.append(
                _recovery(
                    "truncated",
                    message,
                    head_seq=sealed.seq,
                    head_mac=sealed.mac,
                    log_last_seq=tip.seq,
                )
            )
            notes.append(message)
            # Never reuse a seq: the next entry is numbered after the lost ones.
            tip = ChainTip(sealed.seq, tip.mac)
        elif sealed.seq == tip.seq and sealed.mac != tip.mac and tip.seq > 0:
            raise AuditError(
                f"{active_name}: entry seq {tip.seq} is not the entry the sealed head vouches "
                "for; the log was replaced or modified. Run `agentwall verify-log`, and move "
                "the log aside to start a new chain."
            )
    elif tip.seq > 0:
        assert isinstance(head, HeadProblem)
        if head.kind != "wrong_key" or scan is None or scan.key_id == key.key_id:
            message = f"{head.message}; the log's end could not be checked at start-up"
            entries.append(_recovery(head.kind, message))
            notes.append(message)
    if tip.seq == 0 and tip.mac != GENESIS_MAC:  # pragma: no cover - defensive
        raise AuditError("inconsistent chain tip")
    return RecoveryPlan(tip, truncate_to, tuple(entries), tuple(notes))


__all__ = ["CUT_EXCERPT_BYTES", "RecoveryPlan", "TailScan", "plan_recovery", "scan_tail"]
