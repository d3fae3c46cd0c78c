"""``agentwall demo``: see AgentWall allow and deny real MCP traffic, with no set-up."""

from __future__ import annotations

import argparse
import sys

HELP = "run a real MCP server behind agentwall, send allowed and denied calls, verify the log"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (audit log, workspace, process logs)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        import mcp  # noqa: F401 - only to give a clear message when it is missing
    except ImportError:
        print(
            "agentwall demo needs the official MCP SDK: pip install 'agentwall[demo]'",
            file=sys.stderr,
        )
        return 2
    from agentwall.benchtool.procs import ProcessError
    from agentwall.demo.run import run_demo

    try:
        return run_demo(keep=args.keep)
    except ProcessError as exc:
        print(f"agentwall demo: {exc}", file=sys.stderr)
        return 1
