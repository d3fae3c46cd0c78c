"""``agentwall report``: totals, per tool and session, denials, latency, dry-run, policies."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agentwall.audit.keys import AuditKey, load_verify_keys
from agentwall.audit.report import render_json, render_text, report_for_log
from agentwall.cli.verify_log import verify_pool
from agentwall.errors import ConfigError

HELP = (
    "Summarise an audit log: decisions allowed/denied/dry-run, per tool and per session, "
    "each denied incident, latency p50/p95/p99, policy hashes.  Verifies the chain first "
    "when a key is available."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logs", nargs="+", metavar="LOG")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--report-include-params",
        action="store_true",
        help="include the (secret-masked) params of denied calls, when logged",
    )
    parser.add_argument(
        "--key-file",
        action="append",
        metavar="F",
        help="audit key to verify the chain with (default: as verify-log)",
    )
    parser.add_argument("--output", metavar="P", help="write the report here instead of stdout")


def run(args: argparse.Namespace) -> int:
    keys: list[AuditKey] | None
    try:
        keys = load_verify_keys(args.key_file)
    except ConfigError:
        if args.key_file:
            raise
        keys = None  # no key at hand: report anyway, and say the chain was not checked
    with verify_pool(None) as (map_chunks, pieces):
        report = report_for_log(
            args.logs,
            keys=keys,
            include_params=args.report_include_params,
            map_chunks=map_chunks,
            pieces=pieces,
        )
    text = render_json(report) if args.format == "json" else render_text(report)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
