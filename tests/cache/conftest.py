"""Every cache test runs against both backends: the C extension and the
pure-Python fallback.  The native one must have been built unless
AGENTWALL_NO_NATIVE says it was skipped on purpose: a missing build is a
failure here, not a silent skip."""

from __future__ import annotations

import os
import pickle
import select
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from native_support import require_built

from agentwall.cache.backend import native_available

BACKENDS = ["python", "native"]


def _require(name: str) -> None:
    if name == "native":
        require_built(native_available(), "agentwall.cache._shmcache")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    _require(name)
    return name


def fork_call(fn: Callable[[], Any]) -> Callable[[float], Any]:
    """Runs ``fn`` in a forked child; returns a function that waits for and
    returns its (pickled) result, re-raising a child failure as AssertionError."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        code = 0
        try:
            payload = pickle.dumps(("ok", fn()))
        except BaseException:
            payload = pickle.dumps(("error", traceback.format_exc()))
            code = 1
        try:
            with os.fdopen(write_fd, "wb") as out:
                out.write(payload)
        finally:
            os._exit(code)
    os.close(write_fd)

    def wait(timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    os.kill(pid, 9)
                    raise AssertionError(f"child {pid} did not finish in {timeout}s")
                ready, _, _ = select.select([read_fd], [], [], left)
                if not ready:
                    continue
                chunk = os.read(read_fd, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(read_fd)
            os.waitpid(pid, 0)
        status, value = pickle.loads(b"".join(chunks))  # noqa: S301 - our own child
        if status != "ok":
            raise AssertionError(f"child failed:\n{value}")
        return value

    return wait


@pytest.fixture
def forker() -> Iterator[Callable[[Callable[[], Any]], Callable[[float], Any]]]:
    return fork_call


@pytest.fixture(scope="session")
def native_backend() -> str:
    """For differential tests that compare the two backends side by side."""
    _require("native")
    return "native"
