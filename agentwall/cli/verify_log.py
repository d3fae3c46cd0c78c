"""``agentwall verify-log``: is this audit log intact, and if not, where and how not."""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import msgspec
import orjson

from agentwall.audit.keys import load_verify_keys
from agentwall.audit.reader import expand_log_paths
from agentwall.audit.verify import MapFn, VerifyOutcome, verify_files

HELP = (
    "Verify an audit log's HMAC chain and sealed head.  Prints VALID or INVALID with the "
    "first bad seq and the kind of damage.  Exit 0 valid, 1 invalid, 2 unusable input."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "logs",
        nargs="+",
        metavar="LOG",
        help="log files in any order; an active log brings its rotated files",
    )
    parser.add_argument(
        "--key-file",
        action="append",
        metavar="F",
        help="audit key (repeat for logs that span a key change); default "
        "$AGENTWALL_AUDIT_KEY, then the generated key file",
    )
    parser.add_argument("--head", metavar="H", help="sealed head file (default LOG.head)")
    parser.add_argument(
        "--no-head",
        action="store_true",
        help="skip the sealed-head check (removal of the last entries then goes unnoticed)",
    )
    parser.add_argument(
        "--partial",
        action="store_true",
        help="accept a chain that starts after seq 1 (older files archived)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="also fail on a torn last line and on recorded recoveries",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--jobs", type=int, metavar="N", help="processes for large logs (default: one per CPU)"
    )


@contextlib.contextmanager
def verify_pool(jobs: int | None) -> Iterator[tuple[MapFn | None, int]]:
    """A process pool's ``map`` for verifying large logs on every CPU (fork:
    the workers inherit the imports, and nothing else runs yet)."""
    workers = max(1, min(jobs or os.cpu_count() or 1, 8))
    if workers == 1:
        yield None, 1
        return
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        yield pool.map, workers


def run(args: argparse.Namespace) -> int:
    keys = load_verify_keys(args.key_file)
    files = expand_log_paths(args.logs)
    started = time.perf_counter()
    options: dict[str, Any] = {
        "head_file": args.head,
        "check_head": not args.no_head,
        "partial": args.partial,
    }
    with verify_pool(args.jobs) as (map_chunks, pieces):
        outcome = verify_files(files, keys, map_chunks=map_chunks, pieces=pieces, **options)
    seconds = time.perf_counter() - started
    report = outcome.report
    valid = report.valid and not (args.strict and (report.torn_tail or report.notices))
    if args.format == "json":
        data = msgspec.to_builtins(outcome.report)
        data.update(
            valid=valid,
            files=list(outcome.files),
            head_file=outcome.head_file,
            hints=list(outcome.hints),
            seconds=round(seconds, 3),
        )
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        print(_text(outcome, valid, seconds, args.no_head))
    return 0 if valid else 1


def _text(outcome: VerifyOutcome, valid: bool, seconds: float, no_head: bool) -> str:
    r = outcome.report
    rate = f", {r.entries / seconds:,.0f} entries/s" if seconds > 0 and r.entries else ""
    span = f"seq {r.first_seq}..{r.last_seq}" if r.entries else "no entries"
    lines: list[str] = []
    if r.damage is None:
        head = (
            "sealed head not checked (--no-head)"
            if no_head
            else f"sealed head at seq {r.head_seq} matches"
        )
        lines.append(
            f"{'VALID' if valid else 'INVALID'}: {r.entries} entries ({span}) in "
            f"{len(outcome.files)} file(s); key id {', '.join(r.key_ids) or '-'}; "
            f"{head} [{seconds:.2f} s{rate}]"
        )
        if not valid:
            lines.append("  (--strict: the notes below count as damage)")
    else:
        d = r.damage
        seq = f"first bad seq {d.seq}" if d.seq is not None else "no seq"
        where = f" ({d.file}:{d.line})" if d.file is not None and d.line is not None else ""
        lines.append(f"INVALID: {seq}: {d.kind}: {d.message}{where}")
        if r.entries:
            lines.append(f"  entries {r.first_seq}..{r.last_seq} verified before that")
    for notice in r.notices:
        at = f" at seq {notice.seq}" if notice.seq is not None else ""
        lines.append(f"  note: {notice.kind}{at}: {notice.message}")
    for hint in outcome.hints:
        lines.append(f"  hint: {hint}")
    return "\n".join(lines)
