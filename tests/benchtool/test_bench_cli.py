"""`agentwall bench` as a user runs it (the direct half: the proxied half needs `start`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentwall", "bench", *args],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )


def test_direct_only_http_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = _bench("--only", "direct", "--calls", "300", "--concurrency", "1,4", "--json", str(out))
    assert done.returncode == 0, done.stderr
    assert "calls/s" in done.stdout
    assert "goals (issue 7)" in done.stdout
    report = json.loads(out.read_text())
    assert [row["concurrency"] for row in report["rows"]] == [1, 4]
    for row in report["rows"]:
        direct = row["direct"]
        assert direct["calls"] == 300
        assert direct["latency_us"]["p50"] <= direct["latency_us"]["p99"]
        assert direct["unexpected"] == {}
        assert direct["upstream_cpu_per_call_us"] > 0
        assert row["proxied"] is None
    assert report["environment"]["cpus"] >= 1


def test_direct_only_stdio() -> None:
    done = _bench("--mode", "stdio", "--only", "direct", "--calls", "200")
    assert done.returncode == 0, done.stderr
    assert "stdio added latency" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--calls", "0"], "--calls must be at least 1"),
        (["--workload", "nope"], "unknown workload"),
        (["--upstream", "ftp://x"], "--upstream is 'builtin'"),
        (["--concurrency", "0"], "between 1 and 1024"),
    ],
)
def test_bad_arguments_are_refused(args: list[str], message: str) -> None:
    done = _bench(*args)
    assert done.returncode == 2
    assert message in done.stderr
