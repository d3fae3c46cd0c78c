"""Builds the optional native extension; everything else is in pyproject.toml.

``agentwall.cache._shmcache`` (native/shmcache/shmcache.c) is the lock-free
shared-memory decision table and token buckets.  ``agentwall.core._httphead``
(native/httphead/httphead.c) is the byte-level half of the front-end's HTTP/1.1
head parser, and ``agentwall.core._jsonscan`` (native/jsonscan/jsonscan.c) the
one-pass byte counts behind the JSON-RPC parser's checks.  All are optional:
without a C compiler, Python headers, or on a platform it does not support
(the table needs a little-endian 64-bit target with GCC/Clang atomics), the
install still succeeds and AgentWall uses the pure-Python fallbacks, which have
the same API and semantics.  Set
``AGENTWALL_NO_NATIVE=1`` to skip the build on purpose.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_TRUE = ("1", "true", "yes")
# AGENTWALL_NO_NATIVE=1 skips every compiled part: the C extensions and mypyc.
_NATIVE = os.environ.get("AGENTWALL_NO_NATIVE", "") not in _TRUE
_MYPYC_GROUP = "agentwall._hot"
_COMPILED_FROM: dict[str, str] = {}  # hot module -> SHA-256 of the source compiled


def _hot_modules() -> list[str]:
    """``agentwall.compiled.HOT_MODULES``, read without importing the package."""
    tree = ast.parse(Path("agentwall/compiled.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "HOT_MODULES":
            return list(ast.literal_eval(node.value))
    raise RuntimeError("agentwall/compiled.py has no HOT_MODULES")


def _module_path(module: str) -> str:
    return module.replace(".", "/") + ".py"


class OptionalBuildExt(build_ext):
    """A failed compile is a warning, never a failed install.  The mypyc
    modules are all or nothing: each one's shim needs the group library, so
    if any of them failed, none is kept (the pure-Python modules serve)."""

    def run(self) -> None:
        self._failed: set[str] = set()
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means "no native"
            self._skip(exc)
            self._failed.add("*")
        hot = [e for e in self.extensions if e.name.startswith("agentwall") and _is_mypyc(e)]
        if not hot:
            if self.inplace:
                # Built without mypyc on purpose: an earlier compiled build
                # left in the tree would still be what Python loads.
                _remove_compiled_in_tree()
            return
        if self._failed & ({e.name for e in hot} | {"*"}):
            for ext in hot:
                path = self.get_ext_fullpath(ext.name)
                if os.path.exists(path):
                    os.remove(path)
            print(
                "warning: the mypyc build failed; AgentWall runs its pure-Python modules",
                file=sys.stderr,
            )
            return
        # What each compiled module was built from (agentwall.compiled.stale_modules).
        manifest = Path(self.get_ext_fullpath("agentwall._x")).parent / "_hot_sources.txt"
        manifest.write_text("".join(f"{m} {digest}\n" for m, digest in _COMPILED_FROM.items()))

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001 - any build failure means "no native"
            self._skip(exc)
            self._failed.add(ext.name)

    @staticmethod
    def _skip(exc: Exception) -> None:
        print(
            f"warning: agentwall native extension not built ({exc}); "
            "the pure-Python shared-memory backend will be used",
            file=sys.stderr,
        )


_C_FLAGS = ["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"]

extensions = []
if _NATIVE:
    extensions += [
        Extension(
            "agentwall.cache._shmcache",
            sources=["native/shmcache/shmcache.c"],
            extra_compile_args=_C_FLAGS,
            optional=True,
        ),
        Extension(
            "agentwall.core._httphead",
            sources=["native/httphead/httphead.c"],
            extra_compile_args=_C_FLAGS,
            optional=True,
        ),
        Extension(
            "agentwall.core._jsonscan",
            sources=["native/jsonscan/jsonscan.c"],
            extra_compile_args=_C_FLAGS,
            optional=True,
        ),
    ]


def _remove_compiled_in_tree() -> None:
    folder = Path("agentwall")
    paths = [*folder.glob("_hot__mypyc.*"), folder / "_hot_sources.txt"]
    for module in _hot_modules():
        source = Path(_module_path(module))
        paths += source.parent.glob(source.stem + ".cpython-*.so")
    for path in paths:
        if path.exists():
            path.unlink()


def _is_mypyc(ext: Extension) -> bool:
    return any("mypyc" in str(d) for d in ext.include_dirs) or ext.name.endswith("__mypyc")


def _mypyc_extensions() -> list[Extension]:
    """The hot modules compiled by mypyc (agentwall/compiled.py), or none when
    mypyc is missing or cannot compile them: the pure modules then serve."""
    if os.environ.get("AGENTWALL_NO_MYPYC", "") in _TRUE:
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        print(f"warning: mypyc is not available ({exc}); pure-Python modules", file=sys.stderr)
        return []
    # The sources as mypyc reads them now: a source edited during the C
    # compile must show up as stale, not as the one that was built.
    for module in _hot_modules():
        _COMPILED_FROM[module] = hashlib.sha256(Path(_module_path(module)).read_bytes()).hexdigest()
    try:
        return list(
            mypycify(
                [_module_path(m) for m in _hot_modules()],
                opt_level="3",
                group_name=_MYPYC_GROUP,
            )
        )
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - mypy's errors exit
        print(f"warning: mypyc could not compile the hot modules ({exc!r})", file=sys.stderr)
        return []


if _NATIVE:
    extensions += _mypyc_extensions()

setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuildExt})
