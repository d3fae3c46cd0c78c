"""The floor benchmarks (bench/floor_http.py, floor_stdio.py, floor_disk.py) still run
end to end on real processes and report every path they measured.  Their
figures are not checked (speed lives in bench/, never in assertions); what is
checked is that each path answered calls and that the report names it, so a
floor quoted in docs/bench.md can be measured again."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.timeout(240)


def _run(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=200, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_floor_http_measures_direct_skeleton_and_agentwall(tmp_path: Path) -> None:
    out = _run(
        str(BENCH / "floor_http.py"), "--agentwall", "--vary-args", "--rounds", "1",
        "--calls", "30", "--seconds", "0.5", "--log-dir", str(tmp_path),
    )  # fmt: skip
    assert "skeleton: worker, writer: process" in out
    assert "arguments: a new one per call" in out
    for path in ("direct", "skeleton", "agentwall"):
        assert re.search(rf"^  {path}\s+p50\s+\d+ us\s+p99\s+\d+ us", out, re.M), out
        rates = re.search(rf"^  {path}\s+([\d,]+), ([\d,]+)$", out, re.M)
        assert rates is not None, out
        assert all(int(r.replace(",", "")) > 0 for r in rates.groups()), out
    assert re.search(r"^  agentwall .* added p50 [+-]\d+ us", out, re.M), out
    assert re.search(r"^machine during the measured runs .* stolen by the host \d", out, re.M), out
    assert list(tmp_path.iterdir()) == []  # its logs are removed


@pytest.mark.parametrize("variant", [("--no-worker", "--writer", "inline"), ("--writer", "none")])
def test_floor_http_variants(variant: tuple[str, ...]) -> None:
    out = _run(
        str(BENCH / "floor_http.py"), *variant, "--rounds", "1", "--calls", "30",
        "--seconds", "0.3",
    )  # fmt: skip
    assert re.search(r"^  skeleton\s+p50 .* added p50 [+-]\d+ us", out, re.M), out


def test_floor_http_best_case_of_the_design_card(tmp_path: Path) -> None:
    # The worker hands each record to the writer and only the writer's ack
    # releases a call, so calls answered here went through the whole chain.
    out = _run(
        str(BENCH / "floor_http.py"), "--chain", "worker", "--busy-poll-us", "1000",
        "--rounds", "1", "--calls", "30", "--seconds", "0.3", "--log-dir", str(tmp_path),
    )  # fmt: skip
    assert "skeleton: worker, writer: process, chain: worker, busy poll: 1000 us" in out
    assert re.search(r"^  skeleton\s+p50 .* added p50 [+-]\d+ us", out, re.M), out
    rates = re.search(r"^  skeleton\s+([\d,]+), ([\d,]+)$", out, re.M)
    assert rates is not None, out
    assert all(int(r.replace(",", "")) > 0 for r in rates.groups()), out
    assert list(tmp_path.iterdir()) == []


def test_floor_http_chain_needs_a_worker_and_a_writer_process() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "floor_http.py"), "--chain", "worker", "--no-worker"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--chain worker needs the worker and --writer process" in done.stderr


def test_floor_stdio_measures_direct_skeleton_and_wrap(tmp_path: Path) -> None:
    out = _run(
        str(BENCH / "floor_stdio.py"), "--blocks", "2", "--calls", "10",
        "--log-dir", str(tmp_path),
    )  # fmt: skip
    for path in ("direct", "skeleton", "wrap"):
        assert re.search(rf"^  {path}\s+p50\s+\d+ us\s+p99\s+\d+ us", out, re.M), out
    assert re.search(r"^machine during the measured runs .* stolen by the host \d", out, re.M), out
    assert list(tmp_path.iterdir()) == []


def test_varied_requests_miss_a_decision_cache_and_stay_allowed() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import bench_http
    finally:
        sys.path.remove(str(BENCH))
    varied = bench_http.RequestSource("127.0.0.1:1", vary=True)
    first, second = varied.next(), varied.next()
    assert first != second
    fixed = bench_http.RequestSource("127.0.0.1:1")
    assert fixed.next() == fixed.next()
    # Still allowed by the floor's policy: a denial would be a fast path.
    pattern = re.search(r'pattern: "([^"]+)"', bench_http.POLICY)
    assert pattern is not None
    for request in (first, second):
        text = json.loads(request.split(b"\r\n\r\n", 1)[1])["params"]["arguments"]["text"]
        assert re.fullmatch(pattern.group(1), text), text


def test_floor_disk_measures_each_way_and_leaves_nothing(tmp_path: Path) -> None:
    out = _run(
        str(BENCH / "floor_disk.py"), "--dir", str(tmp_path), "--writes", "20",
        "--gap-ms", "0",
    )  # fmt: skip
    assert "20 writes of 600 bytes" in out
    assert re.search(r"^  append\s+p50\s+\d+ us\s+p90\s+\d+ us\s+p99\s+\d+ us", out, re.M), out
    assert re.search(r"^  dsync\s+p50\s+\d+ us", out, re.M), out
    # O_DIRECT is the file system's choice; either way the report says so.
    assert re.search(r"^  direct\s+(p50\s+\d+ us|not supported here)", out, re.M), out
    assert list(tmp_path.iterdir()) == []


def test_floor_disk_refuses_a_write_larger_than_a_block() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "floor_disk.py"), "--size", "5000"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--size between 1 and 4096" in done.stderr
