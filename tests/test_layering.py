"""The pure core never imports the I/O shells.

Imports point downward only: cli -> io -> core/policy/audit/cache/ipc/identity
-> types/errors.  A pure module that imported asyncio, sockets or the shells
would silently turn the sans-IO core into something that cannot be tested as
transcripts, so this is checked, not hoped for.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "agentwall"
PURE = ["core", "policy", "audit", "cache", "promote"]
FORBIDDEN_IN_PURE = {"agentwall.io", "agentwall.cli", "asyncio", "uvloop", "socket", "subprocess"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _pure_files() -> list[Path]:
    return sorted(p for sub in PURE for p in (PACKAGE / sub).rglob("*.py"))


@pytest.mark.parametrize("path", _pure_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_module_does_no_io_imports(path: Path) -> None:
    bad = {
        name
        for name in _imports(path)
        for forbidden in FORBIDDEN_IN_PURE
        if name == forbidden or name.startswith(forbidden + ".")
    }
    assert not bad, f"{path} imports {sorted(bad)}"


def test_types_and_errors_import_nothing_of_ours() -> None:
    for name in ("types.py", "errors.py"):
        ours = {n for n in _imports(PACKAGE / name) if n.startswith("agentwall")}
        assert not ours, f"{name} must stay at the bottom of the import graph: {ours}"
