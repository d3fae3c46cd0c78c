"""The front-end's hot modules that the build compiles to C with mypyc, and
whether this install runs them compiled.

At 64 clients the front-end process is the one at a full core, and its time is
spread thin over Python glue (no function above 7%): compiling these modules
took 22-25% off its CPU per call and added 24-28% throughput at 64 clients on
this project's VM (docs/bench.md, "Compiled hot modules").  The pure-Python
modules stay beside the compiled ones: they are the fallback (no C compiler,
``AGENTWALL_NO_NATIVE=1`` or ``AGENTWALL_NO_MYPYC=1`` at install) and the source
of truth.
``AGENTWALL_NO_MYPYC=1`` at run time loads them even where a compiled build is
installed (the test suite runs once each way).

Two rules keep a compiled module meaning what its source says:
- no msgspec Struct is defined in one (mypyc drops a class's keywords, so
  ``frozen=True`` would be lost silently); each keeps its records in a
  ``*_records`` module that is not compiled (tests/test_compiled.py checks);
- a compiled module whose source changed since the build is stale: Python
  would still load the compiled one.  The build records each source's
  SHA-256 (``_hot_sources.txt``, next to this file); ``stale_modules`` names
  the modules whose source no longer matches, and the test suite and
  ``agentwall start`` refuse to run on them.

setup.py reads ``HOT_MODULES`` from this file's text (it cannot import the
package), so keep it a literal tuple of strings.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

MANIFEST = "_hot_sources.txt"

HOT_MODULES = (
    "agentwall.core.canonical",
    "agentwall.core.jsonrpc",
    "agentwall.core.mcp_http",
    "agentwall.audit.record",
    "agentwall.cache.key",
    "agentwall.ipc.wire",
    "agentwall.io.busy_poll",
    "agentwall.io.upstream",
    "agentwall.io.pool",
    "agentwall.io.http_front",
)


def _source_and_built(module: str, root: Path | None = None) -> tuple[Path, Path | None]:
    """The module's .py, and the compiled file Python would load instead
    (below ``root``, the folder holding the top package, when given)."""
    package, _, name = module.rpartition(".")
    if root is not None:
        folder = root.joinpath(*package.split("."))
    else:
        spec = importlib.util.find_spec(package)
        assert spec is not None
        assert spec.submodule_search_locations is not None
        folder = Path(next(iter(spec.submodule_search_locations)))
    built = sorted(folder.glob(f"{name}.cpython-*.so")) + sorted(folder.glob(f"{name}.*.pyd"))
    return folder / f"{name}.py", (built[0] if built else None)


def forced_pure() -> bool:
    return os.environ.get("AGENTWALL_NO_MYPYC", "") in ("1", "true", "yes")


class _PureSources(importlib.abc.MetaPathFinder):
    """Finds the hot modules' .py files ahead of their compiled builds."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in HOT_MODULES:
            return None
        source, _ = _source_and_built(fullname)
        return importlib.util.spec_from_file_location(fullname, source)


def honour_no_mypyc() -> None:
    """With AGENTWALL_NO_MYPYC=1, make the hot modules load from source."""
    if forced_pure() and not any(isinstance(f, _PureSources) for f in sys.meta_path):
        sys.meta_path.insert(0, _PureSources())


def implementation() -> str:
    """ "compiled" when every hot module runs compiled, "python" when none
    does, "mixed" otherwise (a partial build)."""
    loaded = [importlib.util.find_spec(m) for m in HOT_MODULES]
    built = [s is not None and (s.origin or "").endswith((".so", ".pyd")) for s in loaded]
    if all(built):
        return "compiled"
    return "python" if not any(built) else "mixed"


def stale_modules(modules: tuple[str, ...] = HOT_MODULES, root: Path | None = None) -> list[str]:
    """Hot modules that run compiled from a source other than the one here."""
    if forced_pure() and root is None:
        return []  # the sources run, whatever was built
    manifest = (
        Path(__file__).with_name(MANIFEST)
        if root is None
        else root.joinpath(*modules[0].split(".")[:1], MANIFEST)
    )
    built_from: dict[str, str] = {}
    if manifest.exists():
        for line in manifest.read_text().splitlines():
            module, _, digest = line.partition(" ")
            built_from[module] = digest
    stale = []
    for module in modules:
        source, built = _source_and_built(module, root)
        if built is None:
            continue
        if built_from.get(module) != hashlib.sha256(source.read_bytes()).hexdigest():
            stale.append(module)
    return stale
