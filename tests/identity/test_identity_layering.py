"""agentwall.identity is pure like the core: the clock is passed in, fetching
lives in agentwall.io.oidc."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "agentwall" / "identity"
FORBIDDEN = (
    "agentwall.io",
    "agentwall.cli",
    "asyncio",
    "uvloop",
    "socket",
    "subprocess",
    "ssl",
    "http",
    "urllib.request",
    "h11",
    "time",
    "threading",
)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_identity_module_does_no_io(path: Path) -> None:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    bad = {n for n in names for f in FORBIDDEN if n == f or n.startswith(f + ".")}
    assert not bad, f"{path.name} imports {sorted(bad)}"
