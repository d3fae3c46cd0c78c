"""One audit entry on disk: its fields, its canonical bytes and its MAC.

An entry is one line of JSON::

    <body without its final "}"> ,"mac":"<64 lowercase hex>"} \\n

where *body* is ``canonical_json`` of every field except ``mac`` (sorted keys,
no whitespace, UTF-8) and

    mac = HMAC-SHA256(key, prev_mac_raw || body)

with ``prev_mac_raw`` the 32 raw bytes of the previous entry's mac (32 zero
bytes for the first entry of a chain).  ``mac`` is appended last, outside the
sorted order, so a verifier never has to re-encode anything: it cuts the fixed
74-byte suffix off the line, puts the ``}`` back and has the exact MAC input.
docs/audit.md documents this for third-party verifiers.

Nothing here does I/O; ``agentwall.audit.log`` owns the file.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, cast

import msgspec

from agentwall.audit.record_records import (  # re-exported: importers use record.<Name>
    EntryHead as EntryHead,
)
from agentwall.core.canonical import canonical_json, sha256_hex
from agentwall.core.present import scrubbed
from agentwall.errors import ConfigError
from agentwall.types import PASSING_VERDICTS, AuditEvent, AuditOutcome, Call, Decision

FORMAT_VERSION: Final = 1
GENESIS_MAC: Final = "0" * 64
GENESIS_MAC_RAW: Final = bytes(32)

# Fields the sealer adds around an AuditEvent.  ``mac`` is not part of the body.
ENVELOPE_FIELDS: Final = frozenset({"v", "seq", "ts", "key_id", "prev"})

MAC_PREFIX: Final = b',"mac":"'
# ,"mac":"<64 hex>"}  — the fixed tail of every entry line (newline excluded).
MAC_SUFFIX_LEN: Final = len(MAC_PREFIX) + 64 + 2

_HEX_DIGITS: Final = frozenset(b"0123456789abcdef")

_overlap = ENVELOPE_FIELDS.intersection(AuditEvent.__struct_fields__) | (
    {"mac"} & set(AuditEvent.__struct_fields__)
)
if _overlap:  # pragma: no cover - guards a future edit of types.py
    raise RuntimeError(f"AuditEvent fields collide with the audit envelope: {sorted(_overlap)}")


def key_id_for(key: bytes) -> str:
    """A public name for a key: it identifies, it does not reveal."""
    return hashlib.sha256(b"agentwall-audit-key-id\x00" + key).hexdigest()[:16]


class MacKey:
    """HMAC-SHA256 with the key schedule done once.

    ``hmac.digest`` re-derives the inner and outer pads on every call; copying
    two pre-keyed sha256 states is about twice as fast, and sealing and
    verification are dominated by this function.
    """

    __slots__ = ("_inner", "_outer", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ConfigError(f"an audit key must be at least 32 bytes, got {len(key)}")
        block = hashlib.sha256().block_size
        key_block = hashlib.sha256(key).digest() if len(key) > block else key
        key_block = key_block.ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key_block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key_block))
        self.key_id = key_id_for(key)

    def states(self) -> tuple[Any, Any]:
        """The pre-keyed inner and outer sha256 states (copy before use), for
        loops that inline ``mac``."""
        return self._inner, self._outer

    def mac(self, prev_raw: bytes, body: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(prev_raw)
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def matches(self, prev_raw: bytes, body: bytes, mac_hex: bytes | str) -> bool:
        expected = self.mac(prev_raw, body).hex()
        given = mac_hex.decode("ascii", "replace") if isinstance(mac_hex, bytes) else mac_hex
        return hmac.compare_digest(expected, given)


class _TsCache:
    """The formatted second of the last timestamp: strftime costs more than
    sealing an entry, and consecutive batches nearly always share a second."""

    __slots__ = ("prefix", "second")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""


_ts_cache: Final = _TsCache()


def format_ts(ts_us: int) -> str:
    """UTC with microseconds, e.g. ``2025-06-01T12:00:00.123456Z``."""
    seconds, micros = divmod(ts_us, 1_000_000)
    cache = _ts_cache
    if cache.second != seconds:
        cache.prefix = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        cache.second = seconds
    return "%s%06dZ" % (cache.prefix, micros)  # noqa: UP031 -- the fastest spelling here


def event_fields(event: AuditEvent) -> dict[str, Any]:
    fields: dict[str, Any] = msgspec.to_builtins(event)
    return fields


def entry_body(fields: dict[str, Any], *, seq: int, ts: str, key_id: str, prev: str) -> bytes:
    """Canonical bytes of an entry without its mac.  ``fields`` is consumed."""
    fields["v"] = FORMAT_VERSION
    fields["seq"] = seq
    fields["ts"] = ts
    fields["key_id"] = key_id
    fields["prev"] = prev
    return canonical_json(fields)


def sealed_line(body: bytes, mac: bytes) -> bytes:
    return b"".join((body[:-1], MAC_PREFIX, mac.hex().encode("ascii"), b'"}\n'))


def split_line(line: bytes) -> tuple[bytes, bytes] | None:
    """``(body, mac_hex)`` of one line (without its newline), or None when the
    line does not have the shape every entry has."""
    if len(line) <= MAC_SUFFIX_LEN + 1 or not line.endswith(b'"}'):
        return None
    cut = len(line) - MAC_SUFFIX_LEN
    if line[cut : cut + len(MAC_PREFIX)] != MAC_PREFIX or line[0:1] != b"{":
        return None
    mac_hex = line[cut + len(MAC_PREFIX) : -2]
    if not _HEX_DIGITS.issuperset(mac_hex):
        return None
    return line[:cut] + b"}", mac_hex


HEAD_DECODER: Final = msgspec.json.Decoder(EntryHead)


def parse_head(body: bytes) -> EntryHead | None:
    try:
        head = HEAD_DECODER.decode(body)
    except msgspec.DecodeError:
        return None
    if len(head.prev) != 64 or head.seq < 1:
        return None
    return head


# --- building events in the shells -------------------------------------------------


def decision_event(
    call: Call,
    decision: Decision,
    *,
    latency_us: int,
    dry_run: bool = False,
    log_params: bool = False,
) -> AuditEvent:
    """The audit event for one judged message, as every transport writes it.

    ``args_sha256`` is sha256 of the canonical JSON of the message's whole
    ``params`` member (``Call.params_json``), so equal calls have equal
    digests whatever their original spelling.  With ``log_params`` the params
    themselves are logged after Safe Mode's secret masking; the entry lists
    the JSON pointers that were masked.  Without masking available the call
    fails (never logs secrets in clear).
    """
    verdict = decision.verdict
    outcome = judged_outcome(verdict, verdict in PASSING_VERDICTS, dry_run)
    return judged_event(call, decision, outcome, latency_us, mask_params if log_params else None)


# The ``detail`` of an entry for a message the upstream sent (the HTTP
# front-end and wrap both mark it).
SERVER_ORIGIN_DETAIL: Final[dict[str, Any]] = {"origin": "server"}


def judged_outcome(verdict: str, passes: bool, dry_run: bool) -> AuditOutcome:
    """What a judged message's entry says happened: the verdict when it
    passes, ``dry_run_deny`` for a denial that dry-run mode forwards anyway,
    else ``deny``."""
    if passes:
        return cast(AuditOutcome, verdict)
    return "dry_run_deny" if dry_run else "deny"


def judged_event(
    call: Call,
    decision: Decision,
    outcome: AuditOutcome,
    latency_us: int,
    mask: Callable[[Any], tuple[Any, tuple[str, ...]]] | None = None,
) -> AuditEvent:
    """The entry for one message the HTTP proxy judged, the same whether the
    front-end or the evaluator worker that decided writes it.

    The id, method and target are masked as wrap masks them: a call denied
    for carrying a secret in its tool name, URI or id must not write it to the
    log.  ``mask`` (``--log-params``) copies the params in after masking."""
    identity = call.identity
    params: Any = None
    masked: tuple[str, ...] = ()
    if mask is not None:
        params, masked = mask(call.params)
    return AuditEvent(
        event="decision",
        session=call.session,
        transport=call.transport,
        subject=identity.subject if identity else None,
        issuer=identity.issuer if identity else None,
        call_id=call.call_id,
        rpc_id=scrubbed(call.rpc_id),
        method=scrubbed(call.method),
        target=scrubbed(call.target) or None,
        decision=outcome,
        rule_id=decision.rule_id,
        reason=decision.reason,
        pointer=decision.pointer,
        args_sha256=sha256_hex(call.params_json),
        latency_us=latency_us,
        policy_hash=decision.policy_hash,
        cached=decision.cached,
        category=decision.category,
        params=params,
        masked=masked,
        detail=SERVER_ORIGIN_DETAIL if call.origin == "server" else None,
    )


def mask_params(params: Any) -> tuple[Any, tuple[str, ...]]:
    """Safe Mode's secret masking, applied before params reach the log."""
    # Imported here: verify-log and report never pay for compiling Safe Mode.
    from agentwall.policy.secrets import mask_secrets

    return mask_secrets(params)


__all__ = [
    "ENVELOPE_FIELDS",
    "FORMAT_VERSION",
    "GENESIS_MAC",
    "GENESIS_MAC_RAW",
    "HEAD_DECODER",
    "MAC_PREFIX",
    "MAC_SUFFIX_LEN",
    "SERVER_ORIGIN_DETAIL",
    "EntryHead",
    "MacKey",
    "decision_event",
    "entry_body",
    "event_fields",
    "format_ts",
    "judged_event",
    "judged_outcome",
    "key_id_for",
    "mask_params",
    "parse_head",
    "sealed_line",
    "split_line",
]
