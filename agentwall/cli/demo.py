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
    from importlib import metadata

    try:
        version = metadata.version("mcp")
    except metadata.PackageNotFoundError:
        print("agentwall demo needs the official MCP SDK: pip install '.[demo]'", file=sys.stderr)
        return 2
    if not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 2:
        print(
            f"agentwall demo needs mcp >= 2 (found {version}): pip install -U 'mcp>=2'",
            file=sys.stderr,
        )
        return 2
    from agentwall.benchtool.procs import ProcessError
    from agentwall.benchtool.stopping import unwind_on_stop_signals
    from agentwall.demo.run import run_demo

    try:
        with unwind_on_stop_signals():
            return run_demo(keep=args.keep)
    except ProcessError as exc:
        print(f"agentwall demo: {exc}", file=sys.stderr)
        return 1
