"""Verifying a log set on disk: file order, the sealed head, and the chain.

The files given may come in any order (a shell glob, rotated files): they are
put in chain order by the seq of their first entry.  The sealed head is found
beside the active file (``<log>.head``) unless one is given or the check is
explicitly skipped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import msgspec

from agentwall.audit.chain import ChainVerifier, Damage, DamageKind, HeadSeal, VerifyReport
from agentwall.audit.files import base_of, head_path, rotated_files
from agentwall.audit.head import HeadProblem, read_head
from agentwall.audit.keys import AuditKey
from agentwall.audit.record import parse_head, split_line
from agentwall.errors import ConfigError

_CHUNK: Final = 8 << 20


class VerifyOutcome(msgspec.Struct, frozen=True):
    report: VerifyReport
    files: tuple[str, ...]
    head_file: str | None
    hints: tuple[str, ...]

    @property
    def valid(self) -> bool:
        return self.report.valid


def iter_lines(path: Path) -> Iterator[tuple[bytes, int, bool]]:
    """``(line without newline, 1-based line number, ended with a newline)``."""
    lineno = 0
    rest = b""
    with path.open("rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            lines = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
            rest = lines.pop()
            for line in lines:
                lineno += 1
                yield line, lineno, True
    if rest:
        yield rest, lineno + 1, False


def first_seq_of(path: Path) -> int | None:
    with path.open("rb") as f:
        line = f.readline(1 << 24)
    parts = split_line(line.rstrip(b"\n"))
    head = parse_head(parts[0]) if parts else None
    return head.seq if head else None


def order_files(paths: Sequence[Path]) -> list[Path]:
    """Chain order: by first seq; files whose first line is unreadable keep
    their place relative to each other, after the rest."""
    keyed = []
    for index, path in enumerate(paths):
        seq = first_seq_of(path)
        keyed.append((seq is None, seq or 0, index, path))
    return [p for *_, p in sorted(keyed)]


def _find_head(paths: Sequence[Path]) -> Path | None:
    for base in dict.fromkeys(base_of(p) for p in paths):
        candidate = head_path(base)
        if candidate.exists():
            return candidate
    return None


def verify_files(
    paths: Sequence[str | Path],
    keys: Sequence[AuditKey],
    *,
    head_file: str | Path | None = None,
    check_head: bool = True,
    partial: bool = False,
) -> VerifyOutcome:
    files = [Path(p) for p in paths]
    for path in files:
        if not path.is_file():
            raise ConfigError(f"{path}: no such audit log file")
    files = order_files(files)
    key_map = {k.key_id: k.mac_key for k in keys}
    hints: list[str] = []
    given = {p.resolve() for p in files}
    for base in dict.fromkeys(base_of(p) for p in files):
        missing = [r for r in rotated_files(base) if r.resolve() not in given]
        if missing:
            hints.append(
                f"{len(missing)} rotated file(s) of {base} were not given, e.g. "
                f"{missing[0]}; pass them all ({base}.*) to check the whole chain"
            )

    head: HeadSeal | None = None
    head_damage: Damage | None = None
    found_head: Path | None = None
    if check_head:
        found_head = Path(head_file) if head_file is not None else _find_head(files)
        if found_head is None or not found_head.exists():
            head_damage = Damage(
                "head_missing",
                None,
                "no sealed head found beside the log "
                f"({head_path(base_of(files[0])) if files else '?'}): removal "
                "of entries from the end cannot be ruled out (pass --head, or "
                "--no-head to skip this check knowingly)",
            )
        else:
            sealed = read_head(found_head.read_bytes(), key_map)
            if isinstance(sealed, HeadProblem):
                kind: DamageKind = (
                    "wrong_key"
                    if sealed.kind == "wrong_key"
                    else ("head_invalid" if sealed.kind == "head_invalid" else "head_missing")
                )
                head_damage = Damage(kind, None, f"{found_head}: {sealed.message}")
            else:
                head = sealed

    verifier = ChainVerifier(key_map, head=head, partial=partial)
    for path in files:
        name = str(path)
        for line, lineno, terminated in iter_lines(path):
            verifier.feed(line, file=name, lineno=lineno, terminated=terminated)
            if verifier.done:
                break
        if verifier.done:
            break
    report = verifier.finish()
    if report.valid and head_damage is not None:
        report = msgspec.structs.replace(report, valid=False, damage=head_damage)
    return VerifyOutcome(
        report, tuple(str(p) for p in files), str(found_head) if found_head else None, tuple(hints)
    )


__all__ = ["VerifyOutcome", "first_seq_of", "iter_lines", "order_files", "verify_files"]
