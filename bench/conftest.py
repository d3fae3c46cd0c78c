"""Shared set-up for the benchmarks in bench/ (pytest-benchmark).

Conventions for every bench file:
- name it ``bench/bench_<area>.py`` and its functions ``test_*``; this conftest
  collects ``bench_*.py`` (the normal test run never does: testpaths = tests);
- time one small operation with the ``benchmark`` fixture (or
  ``benchmark.pedantic``); a test may also put lower-is-better figures in
  ``benchmark.extra_info["gate"] = {"name": value}`` for the CI gate;
- no timing assertions: the gate compares against bench/baseline.json.

Run them: ``.venv/bin/python -m pytest bench --benchmark-enable``.
``scripts/bench-gate`` runs a quick pass and compares it with the baseline
(see docs/bench.md).

The calibration loop below runs in the same process before and after the
benchmarks; the gate divides each benchmark's median by its median, so a
machine that is uniformly slower (or busier) today does not fail the gate.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentwall.benchtool.calibration import calibration_samples, syscall_calibration_samples
from agentwall.benchtool.procs import FastUpstream, Proxy, has_module
from agentwall.benchtool.runner import bundled_policy
from agentwall.benchtool.sync_client import SyncHttpSession

_CALIBRATION = pytest.StashKey[list[float]]()
_SYSCALL_CALIBRATION = pytest.StashKey[list[float]]()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    # A file named on the command line is collected by pytest itself already.
    if parent.session.isinitpath(file_path):
        return None
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session", autouse=True)
def _calibrate(request: pytest.FixtureRequest) -> Iterator[None]:
    samples = request.config.stash.setdefault(_CALIBRATION, [])
    syscalls = request.config.stash.setdefault(_SYSCALL_CALIBRATION, [])
    samples.extend(calibration_samples())
    syscalls.extend(syscall_calibration_samples())
    yield
    samples.extend(calibration_samples())
    syscalls.extend(syscall_calibration_samples())


@pytest.fixture(autouse=True)
def _local_calibration(request: pytest.FixtureRequest) -> Iterator[None]:
    """Calibrate right before and after each benchmark too.

    On a shared machine the contention changes from one second to the next;
    the calibration taken around a benchmark sees the same contention as the
    benchmark, so the gate divides by this one when it is there.
    """
    if "benchmark" not in request.fixturenames:
        yield
        return
    before = calibration_samples(samples=5, per_sample=10)
    syscalls_before = syscall_calibration_samples(samples=5, per_sample=20)
    yield
    after = calibration_samples(samples=5, per_sample=10)
    syscalls = syscalls_before + syscall_calibration_samples(samples=5, per_sample=20)
    bench = request.node.funcargs.get("benchmark")
    if bench is not None:
        bench.extra_info["calibration_ns"] = {
            "median": statistics.median(before + after),
            "min": min(before + after),
            "syscall_median": statistics.median(syscalls),
            "syscall_min": min(syscalls),
        }


def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list[Any], output_json: dict[str, Any]
) -> None:
    samples = config.stash.get(_CALIBRATION, [])
    if samples:
        output_json["calibration"] = {
            "median_ns": statistics.median(samples),
            "samples_ns": samples,
        }
        syscalls = config.stash.get(_SYSCALL_CALIBRATION, [])
        if syscalls:
            output_json["calibration"]["syscall_median_ns"] = statistics.median(syscalls)
            output_json["calibration"]["syscall_samples_ns"] = syscalls


@pytest.fixture(scope="session")
def bench_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="session")
def fast_upstream(bench_workdir: Path) -> Iterator[FastUpstream]:
    with FastUpstream(bench_workdir) as upstream:
        upstream.start()
        yield upstream


@pytest.fixture(scope="session")
def bench_policy() -> str:
    path = bundled_policy()
    assert path is not None, "agentwall/data/bench-policy.yaml is missing"
    return str(path)


@pytest.fixture(scope="session")
def bench_proxy(
    fast_upstream: FastUpstream, bench_workdir: Path, bench_policy: str
) -> Iterator[Proxy]:
    """``agentwall start`` in front of the fast upstream, as a user runs it."""
    if not has_module("agentwall.cli.start"):
        pytest.skip("`agentwall start` is not in this tree yet")
    with Proxy(fast_upstream.url, bench_workdir, policy=bench_policy) as proxy:
        proxy.start()
        yield proxy


@pytest.fixture
def direct_session(fast_upstream: FastUpstream) -> Iterator[SyncHttpSession]:
    host, port = fast_upstream.url.split("//")[1].split("/")[0].split(":")
    session = SyncHttpSession(host, int(port))
    yield session
    session.close()


@pytest.fixture
def proxied_session(bench_proxy: Proxy) -> Iterator[SyncHttpSession]:
    session = SyncHttpSession(bench_proxy.host, bench_proxy.port)
    yield session
    session.close()
