"""The one rule for tests of the C extensions in ``native/``: each must have
been built, unless AGENTWALL_NO_NATIVE says it was skipped on purpose.  A
missing build fails the test; it is never a silent skip."""

from __future__ import annotations

import os

import pytest


def native_skipped_on_purpose() -> bool:
    return os.environ.get("AGENTWALL_NO_NATIVE", "") in ("1", "true", "yes")


def require_built(built: bool, module: str) -> None:
    if built:
        return
    if native_skipped_on_purpose():
        pytest.skip("native extension skipped on purpose (AGENTWALL_NO_NATIVE)")
    pytest.fail(f"{module} was not built: pip install -e . needs a C compiler")
