"""The records of ``agentwall.audit.record``: msgspec Structs live here, outside the
module mypyc compiles (a compiled module drops a Struct's class keywords,
``frozen=True`` among them)."""

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
