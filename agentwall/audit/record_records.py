"""The msgspec Structs of ``agentwall.audit.record``, kept uncompiled (agentwall/compiled.py)."""

from __future__ import annotations

import msgspec


class EntryHead(msgspec.Struct, frozen=True):
    """The fields verification looks at; every other field is skipped unparsed."""

    v: int
    seq: int
    key_id: str
    prev: str
    event: str
    ts: str = ""
