"""The command line: a table of subcommands, each in its own small module.

A subcommand module defines ``HELP: str``, ``add_arguments(parser)`` and
``run(args) -> int``.  Modules are imported lazily so that ``verify-log`` does
not pay for the proxy's imports.  ``AgentwallError`` becomes its diagnostics
on stderr and its exit code; nothing else is caught here, so a bug is loud.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from agentwall import __version__
from agentwall.errors import AgentwallError

COMMANDS: dict[str, str] = {
    "start": "agentwall.cli.start",
    "wrap": "agentwall.cli.wrap",
    "test": "agentwall.cli.test",
    "verify-log": "agentwall.cli.verify_log",
    "report": "agentwall.cli.report",
    "init": "agentwall.cli.init",
    "keygen": "agentwall.cli.keygen",
    "promote": "agentwall.cli.promote",
    "bench": "agentwall.cli.bench",
    "demo": "agentwall.cli.demo",
}


def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(COMMANDS[name])
    except ModuleNotFoundError as exc:
        if exc.name == COMMANDS[name]:
            return None
        raise


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentwall",
        description="Security sidecar for AI agents and their MCP tool servers.",
    )
    parser.add_argument("--version", action="version", version=f"agentwall {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = _load(name) if only in (None, name) else None
        if module is None:
            continue
        child = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(child)
        child.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    wanted = args_list[0] if args_list and args_list[0] in COMMANDS else None
    parser = build_parser(wanted)
    args = parser.parse_args(args_list)
    module = getattr(args, "_module", None)
    if module is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        code: int = module.run(args)
    except AgentwallError as exc:
        print(f"agentwall {args.command}: error: {exc.diagnostics()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        from agentwall.benchtool.stopping import describe, exit_code

        print(f"agentwall {args.command}: {describe(exc)}", file=sys.stderr)
        return exit_code(exc)
    return code
