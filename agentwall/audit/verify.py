"""Verifying a log set on disk: file order, the sealed head, and the chain.

The files given may come in any order (a shell glob, rotated files): they are
put in chain order by the seq of their first entry.  The sealed head is found
beside the active file (``<log>.head``) unless one is given or the check is
explicitly skipped.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final

import msgspec

from agentwall.audit.chain import (
    ChainVerifier,
    Damage,
    DamageKind,
    HeadSeal,
    Notice,
    VerifyReport,
    head_damage,
)
from agentwall.audit.files import base_of, head_path, rotated_files
from agentwall.audit.head import HeadProblem, read_head
from agentwall.audit.keys import AuditKey
from agentwall.audit.record import MacKey, parse_head, split_line
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


def iter_line_batches(
    path: Path, start: int = 0, end: int | None = None
) -> Iterator[tuple[list[bytes], int, bool]]:
    """``(lines, line number of the first, whether the last one ended with a
    newline)``, a few megabytes at a time, from byte ``start`` (a line start)
    to ``end`` (a line end, or the end of the file)."""
    lineno = 1
    rest = b""
    with path.open("rb") as f:
        f.seek(start)
        remaining = -1 if end is None else end - start
        while remaining != 0:
            chunk = f.read(_CHUNK if remaining < 0 else min(_CHUNK, remaining))
            if not chunk:
                break
            if remaining > 0:
                remaining -= len(chunk)
            lines = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
            rest = lines.pop()
            if lines:
                yield lines, lineno, True
                lineno += len(lines)
    if rest:
        yield [rest], lineno, False


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


class ChunkTask(msgspec.Struct, frozen=True):
    """One piece of a log for a parallel worker: whole lines from ``start`` to
    ``end`` of ``path``."""

    path: str
    start: int
    end: int
    secrets: list[bytes]
    partial: bool
    watch_seq: int | None


def verify_chunk(task: ChunkTask) -> VerifyReport:
    """Verify one piece on its own (a worker's job; see ``verify_files``)."""
    keys = {k.key_id: k.mac_key for k in (AuditKey(s, source="task") for s in task.secrets)}
    verifier = ChainVerifier(keys, partial=task.partial, watch_seq=task.watch_seq)
    for lines, first_lineno, terminated in iter_line_batches(Path(task.path), task.start, task.end):
        verifier.feed_many(
            lines, file=task.path, first_lineno=first_lineno, last_terminated=terminated
        )
        if verifier.done:
            break
    return verifier.finish()


def _line_start_after(path: Path, offset: int) -> int:
    with path.open("rb") as f:
        f.seek(offset)
        while True:
            block = f.read(1 << 16)
            if not block:
                return f.tell()
            nl = block.find(b"\n")
            if nl >= 0:
                return offset + nl + 1
            offset += len(block)


def _tasks(
    files: Sequence[Path],
    keys: Sequence[AuditKey],
    pieces: int,
    partial: bool,
    watch_seq: int | None,
) -> list[ChunkTask]:
    secrets = [k.secret for k in keys]
    tasks: list[ChunkTask] = []
    for path in files:
        size = path.stat().st_size
        cuts = sorted(
            {0, size, *(_line_start_after(path, size * i // pieces) for i in range(1, pieces))}
        )
        for start, end in itertools.pairwise(cuts):
            if end > start:
                tasks.append(
                    ChunkTask(str(path), start, end, secrets, partial or bool(tasks), watch_seq)
                )
    return tasks


def _join(reports: Sequence[VerifyReport], head: HeadSeal | None) -> VerifyReport | None:
    """One report for consecutive pieces that each verified, or None when they
    do not join up cleanly (the caller then verifies in one pass, which
    classifies the damage exactly)."""
    last_seq: int | None = None
    last_mac: str | None = None
    first_seq: int | None = None
    entries = 0
    key_ids: list[str] = []
    notices: list[Notice] = []
    watched: str | None = None
    for index, report in enumerate(reports):
        if not report.valid or (report.torn_tail and index != len(reports) - 1):
            return None
        if not report.entries:
            if report.torn_tail:
                notices += report.notices
                continue
            return None
        if last_seq is None:
            first_seq = report.first_seq
        elif report.first_seq != last_seq + 1 or report.first_prev != last_mac:
            return None
        last_seq, last_mac = report.last_seq, report.last_mac
        entries += report.entries
        key_ids += [k for k in report.key_ids if k not in key_ids]
        notices += report.notices
        watched = watched or report.watched_mac
    if head is not None and head_damage(head, first_seq, last_seq, watched) is not None:
        return None
    return VerifyReport(
        valid=True,
        entries=entries,
        first_seq=first_seq,
        last_seq=last_seq,
        last_mac=last_mac,
        key_ids=tuple(key_ids),
        damage=None,
        notices=tuple(notices),
        head_seq=head.seq if head is not None else None,
        torn_tail=bool(reports) and reports[-1].torn_tail,
        first_prev=reports[0].first_prev if reports else None,
        watched_mac=watched,
    )


MapFn = Callable[[Callable[[ChunkTask], VerifyReport], list[ChunkTask]], Iterable[VerifyReport]]
PARALLEL_MIN_BYTES: Final = 32 << 20


def verify_files(
    paths: Sequence[str | Path],
    keys: Sequence[AuditKey],
    *,
    head_file: str | Path | None = None,
    check_head: bool = True,
    partial: bool = False,
    map_chunks: MapFn | None = None,
    pieces: int = 2,
    parallel_min_bytes: int = PARALLEL_MIN_BYTES,
) -> VerifyOutcome:
    """Verify a log set.  With ``map_chunks`` (a process pool's ``map``),
    logs larger than ``PARALLEL_MIN_BYTES`` are cut at line boundaries into
    pieces that are verified in parallel and joined by seq and mac; any
    damage, or pieces that do not join, sends the whole set through the
    one-pass verifier, so the verdict and its classification never depend
    on the split."""
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
    head_damage_found: Damage | None = None
    found_head: Path | None = None
    if check_head:
        found_head = Path(head_file) if head_file is not None else _find_head(files)
        if found_head is None or not found_head.exists():
            head_damage_found = Damage(
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
                head_damage_found = Damage(kind, None, f"{found_head}: {sealed.message}")
            else:
                head = sealed

    joined: VerifyReport | None = None
    total = sum(p.stat().st_size for p in files)
    if map_chunks is not None and total >= parallel_min_bytes:
        tasks = _tasks(files, keys, pieces, partial, head.seq if head is not None else None)
        joined = _join(list(map_chunks(verify_chunk, tasks)), head)
    report = joined if joined is not None else _verify_one_pass(files, key_map, head, partial)
    if report.valid and head_damage_found is not None:
        report = msgspec.structs.replace(report, valid=False, damage=head_damage_found)
    return VerifyOutcome(
        report,
        tuple(str(p) for p in files),
        str(found_head) if found_head else None,
        tuple(hints),
    )


def _verify_one_pass(
    files: Sequence[Path], key_map: dict[str, MacKey], head: HeadSeal | None, partial: bool
) -> VerifyReport:
    verifier = ChainVerifier(key_map, head=head, partial=partial)
    for path in files:
        name = str(path)
        for lines, first_lineno, terminated in iter_line_batches(path):
            verifier.feed_many(
                lines, file=name, first_lineno=first_lineno, last_terminated=terminated
            )
            if verifier.done:
                break
        if verifier.done:
            break
    return verifier.finish()


__all__ = [
    "PARALLEL_MIN_BYTES",
    "ChunkTask",
    "MapFn",
    "VerifyOutcome",
    "first_seq_of",
    "iter_line_batches",
    "iter_lines",
    "order_files",
    "verify_chunk",
    "verify_files",
]
