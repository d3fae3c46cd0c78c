"""The end-to-end benchmark files also run with ``--benchmark-disable``, as a
smoke test: pytest-benchmark then calls each measured function once and keeps
no timings, so a benchmark that summarises its own samples must not assume
them (it used to fail with an AttributeError on ``benchmark.stats``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(240)


def test_http_latency_benchmark_runs_with_benchmarks_disabled(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "--benchmark-disable", "bench/bench_http.py::test_proxied_call[workers0-tmpfs]",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=200, check=False,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "1 passed" in out, out
