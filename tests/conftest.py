"""Suite-wide settings."""

import importlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, settings
from native_support import require_built

from agentwall import compiled


def pytest_sessionstart(session: pytest.Session) -> None:
    # A compiled module built from an older source would be tested in place
    # of the source (Python loads the .so first): refuse, loudly.
    stale = compiled.stale_modules()
    if stale:
        pytest.exit(
            f"stale compiled modules {stale}: their source changed since the build; "
            "run `pip install -e .` again (or AGENTWALL_NO_MYPYC=1 pip install -e .)",
            returncode=3,
        )


# Hypothesis's default 200 ms deadline per example is a timed assertion: on a
# loaded or throttled CI host a correct example can take longer and fail the
# run as "flaky".  Speed is measured in bench/, never asserted here.
settings.register_profile("agentwall", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# CI (.ci/run) draws the same examples every run: a property a random draw
# breaks is a bug to fix, but it must show up where someone is working on
# the code (scripts/test and plain pytest explore anew each run, as the
# fifth session's run found a starter-policy bug), not turn a clean-clone
# CI run red on an unrelated change.
settings.register_profile(
    "agentwall-ci", parent=settings.get_profile("agentwall"), derandomize=True
)
settings.load_profile("agentwall-ci" if os.environ.get("AGENTWALL_CI") else "agentwall")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``tmpfs("256k")`` mounts a real tmpfs of that size under tmp_path (a
    disk that really fills up); the test is skipped where mounting is not
    allowed.  Unmounted afterwards."""
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        where = tmp_path / f"tmpfs-{len(mounts)}"
        where.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounts.append(where)
        return where

    yield mount
    for where in mounts:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _native(module: str) -> ModuleType:
    """A C extension of native/ (``agentwall.core._httphead``, ``._jsonscan``).
    It must have been built unless AGENTWALL_NO_NATIVE says it was skipped on
    purpose: a missing build fails the test, it is not a silent skip."""
    try:
        return importlib.import_module(module)
    except ImportError:
        require_built(False, module)
        raise


@pytest.fixture(scope="session")
def native_httphead() -> ModuleType:
    return _native("agentwall.core._httphead")


@pytest.fixture(scope="session")
def native_jsonscan() -> ModuleType:
    return _native("agentwall.core._jsonscan")


@pytest.fixture(params=["native", "python"])
def json_counts(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test over each implementation of jsonrpc.parse's byte counts:
    the C extension and the Python reference."""
    from agentwall.core import jsonrpc

    name: str = request.param
    if name == "native":
        _native("agentwall.core._jsonscan")
    monkeypatch.setattr(jsonrpc, "syntax_counts", jsonrpc.counts_named(name))
    return name


@pytest.fixture(params=["native", "python"])
def head_scan(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test over each implementation of the HTTP head scan: the C
    extension and the Python reference."""
    from agentwall.core import mcp_http

    name: str = request.param
    if name == "native":
        _native("agentwall.core._httphead")  # a missing build fails, it is not skipped
    monkeypatch.setattr(mcp_http, "scan_head", mcp_http.scan_named(name))
    return name
