"""Reading a log set's entries as dicts, in chain order, for report and init.

Reading does not verify: ``verify_files`` does that, and ``report`` says
whether it could.  Lines that are not JSON objects are counted, not fatal,
so a damaged log can still be summarised.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from agentwall.audit.files import base_of, chain_files
from agentwall.audit.verify import iter_lines, order_files
from agentwall.errors import ConfigError

_decode = msgspec.json.Decoder().decode


class ReadCounts:
    """Filled in while ``iter_entries`` runs."""

    __slots__ = ("entries", "torn", "unreadable")

    def __init__(self) -> None:
        self.entries = 0
        self.unreadable = 0
        self.torn = False


def expand_log_paths(paths: Sequence[str | Path]) -> list[Path]:
    """The files to read: each path as given, plus the rotated files of an
    active log named alone (``audit.log`` means the whole set)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_file():
            raise ConfigError(f"{path}: no such audit log file")
        found = chain_files(path) if base_of(path) == path else [path]
        for candidate in found or [path]:
            if candidate not in out:
                out.append(candidate)
    return out


def iter_entries(
    paths: Sequence[Path], counts: ReadCounts | None = None
) -> Iterator[dict[str, Any]]:
    counts = counts if counts is not None else ReadCounts()
    for path in order_files(paths):
        for line, _lineno, terminated in iter_lines(path):
            if not line.strip():
                continue
            try:
                # msgspec keeps integers beyond 64 bits exact (orjson would
                # turn them into floats).
                entry = _decode(line)
            except msgspec.DecodeError:
                if terminated:
                    counts.unreadable += 1
                else:
                    counts.torn = True
                continue
            if not isinstance(entry, dict):
                counts.unreadable += 1
                continue
            counts.entries += 1
            yield entry


__all__ = ["ReadCounts", "expand_log_paths", "iter_entries"]
