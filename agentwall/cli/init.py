"""``agentwall init --from-log``: write a tight starter policy from an audit log."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from agentwall.audit.reader import expand_log_paths, iter_entries
from agentwall.audit.starter import starter_policy
from agentwall.errors import ConfigError, PolicyError

HELP = (
    "Write a starter policy (default_action: deny) that allows exactly the tools, "
    "parameters, resources and methods an agent used, from its audit log."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from-log",
        nargs="+",
        required=True,
        metavar="LOG",
        help="audit log (an active log brings its rotated files)",
    )
    parser.add_argument(
        "-o",
        "--output",
        default="policy.yaml",
        metavar="P",
        help="where to write the policy (default policy.yaml; '-' for stdout)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")


def run(args: argparse.Namespace) -> int:
    files = expand_log_paths(args.from_log)
    source = ", ".join(str(f) for f in files)
    starter = starter_policy(iter_entries(files), source=source)
    if starter.decisions == 0:
        raise ConfigError(f"{source}: no decision entries to learn from")
    _check_loads(starter.text)
    if args.output == "-":
        sys.stdout.write(starter.text)
    else:
        _write(Path(args.output), starter.text, force=args.force)
        print(
            f"wrote {args.output}: {starter.tools} tools from {starter.decisions} decisions; "
            "review the '# DECIDE:' lines",
            file=sys.stderr,
        )
    for note in starter.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _check_loads(text: str) -> None:
    """The generated policy must load; a failure here is a bug, said plainly."""
    from agentwall.policy import load_policy

    fd, tmp = tempfile.mkstemp(suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        load_policy(tmp)
    except PolicyError as exc:
        raise ConfigError(
            f"the generated policy does not load ({exc.diagnostics()}); "
            "please report this with the log"
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _write(path: Path, text: str, *, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError as exc:
        raise ConfigError(f"{path} exists; pass --force to overwrite it") from exc
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
