"""Names of the files that make up one audit log.

For ``--log-path audit.log``:

- ``audit.log`` the active file, appended to;
- ``audit.log.000000001234`` a rotated file whose first entry is seq 1234;
- ``audit.log.head`` the sealed head (see ``agentwall.audit.head``);
- ``audit.log.lock`` held (flock) by the one process that owns the chain.

These are plain path helpers; only ``agentwall.audit.log`` opens files for
writing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

ROTATED_DIGITS: Final = 12
_ROTATED: Final = re.compile(r"^(?P<base>.+)\.(?P<seq>\d{12})$")


def head_path(base: str | Path) -> Path:
    return Path(f"{base}.head")


def lock_path(base: str | Path) -> Path:
    return Path(f"{base}.lock")


def rotated_path(base: str | Path, first_seq: int) -> Path:
    return Path(f"{base}.{first_seq:0{ROTATED_DIGITS}d}")


def base_of(path: str | Path) -> Path:
    """The active-file path a log file belongs to (itself, or its unrotated name)."""
    match = _ROTATED.match(str(path))
    return Path(match.group("base")) if match else Path(path)


def rotated_files(base: str | Path) -> list[Path]:
    """Rotated files of ``base``, oldest first."""
    base = Path(base)
    directory = base.parent
    prefix = base.name + "."
    found: list[tuple[int, Path]] = []
    try:
        names = os.listdir(directory if str(directory) else ".")
    except FileNotFoundError:
        return []
    for name in names:
        if name.startswith(prefix):
            suffix = name[len(prefix) :]
            if len(suffix) == ROTATED_DIGITS and suffix.isdigit():
                found.append((int(suffix), directory / name))
    return [p for _, p in sorted(found)]


def chain_files(base: str | Path) -> list[Path]:
    """Every file of the log at ``base``, in chain order."""
    files = rotated_files(base)
    if Path(base).exists():
        files.append(Path(base))
    return files


__all__ = [
    "ROTATED_DIGITS",
    "base_of",
    "chain_files",
    "head_path",
    "lock_path",
    "rotated_files",
    "rotated_path",
]
