"""Builds the optional native extension; everything else is in pyproject.toml.

``agentwall.cache._shmcache`` (native/shmcache/shmcache.c) is the lock-free
shared-memory decision table and token buckets.  ``agentwall.core._httphead``
(native/httphead/httphead.c) is the byte-level half of the front-end's HTTP/1.1
head parser.  Both are optional: without a C compiler, Python headers, or on a
platform it does not support (the table needs a little-endian 64-bit target with
GCC/Clang atomics), the install still succeeds and AgentWall uses the
pure-Python fallbacks, which have the same API and semantics.  Set
``AGENTWALL_NO_NATIVE=1`` to skip the build on purpose.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """A failed compile is a warning, never a failed install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means "no native"
            self._skip(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001 - any build failure means "no native"
            self._skip(exc)

    @staticmethod
    def _skip(exc: Exception) -> None:
        print(
            f"warning: agentwall native extension not built ({exc}); "
            "the pure-Python shared-memory backend will be used",
            file=sys.stderr,
        )


_C_FLAGS = ["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"]

extensions = []
if os.environ.get("AGENTWALL_NO_NATIVE", "") not in ("1", "true", "yes"):
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
    ]

setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuildExt})
