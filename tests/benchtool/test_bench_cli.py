"""`agentwall bench` as a user runs it (the direct half: the proxied half needs `start`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentwall.benchtool import procstat
from agentwall.benchtool.procs import free_port, has_module

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
    # 2,000 calls: the upstream's CPU is read from /proc in 10 ms clock ticks,
    # and 300 calls of the (faster since the hot modules are compiled)
    # upstream could fit inside one tick and read as 0.
    done = _bench("--only", "direct", "--calls", "2000", "--concurrency", "1,4", "--json", str(out))
    assert done.returncode == 0, done.stderr
    assert "calls/s" in done.stdout
    assert "goals (issue 7)" in done.stdout
    report = json.loads(out.read_text())
    assert [row["concurrency"] for row in report["rows"]] == [1, 4]
    for row in report["rows"]:
        direct = row["direct"]
        assert direct["calls"] == 2000
        assert direct["latency_us"]["p50"] <= direct["latency_us"]["p99"]
        assert direct["unexpected"] == {}
        assert direct["upstream_cpu_per_call_us"] > 0
        assert row["proxied"] is None
        # How the machine's cores went during the run (the host's steal is
        # the noise behind every figure).  A 2,000-call run lasts a few clock
        # ticks, so only the shape is checked here; the accounting is checked
        # over a longer window in test_stats_metrics_procstat.py.
        cores = direct["machine_cores"]
        assert set(cores) == {"busy", "idle", "steal"}
        assert min(cores.values()) >= 0
    assert report["environment"]["cpus"] >= 1
    assert "machine during each run (cores of" in done.stdout
    assert "1 direct busy" in done.stdout


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


@pytest.mark.skipif(
    not (has_module("agentwall.cli.start") and has_module("agentwall.cli.verify_log")),
    reason="needs `agentwall start` and `verify-log`",
)
def test_proxied_http_run_reports_every_column(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = _bench("--calls", "400", "--concurrency", "1,4", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["audit"].startswith("verified"), report["audit"]
    assert report["environment"]["fdatasync_us"]["p50"] > 0
    for row in report["rows"]:
        proxied = row["proxied"]
        assert proxied["calls"] == 400
        # Denials came back as policy errors and nothing else was refused.
        assert proxied["unexpected"] == {}
        assert set(proxied["outcomes"]["deny_tool"]) == {"rpc-32001"}
        assert proxied["proxy_cpu_per_call_us"] > 0
        # The split by process: the supervisor/front-end, the forked
        # evaluators and the writer process each found in the real tree.
        roles = proxied["proxy_cpu_by_role_us"]
        assert {"front-end", "evaluators", "audit writer"} <= set(roles), roles
        assert roles["front-end"] > 0
        assert sum(roles.values()) == pytest.approx(proxied["proxy_cpu_per_call_us"])
        assert proxied["fsync_batch_mean"] >= 1
        assert 0 < proxied["cache_hit_rate"] < 1
        assert row["overhead_p50_us"] is not None
    assert "UNEXPECTED" not in done.stdout
    assert "proxy CPU per call at 4 clients by process (us, /proc): front-end" in done.stdout


@pytest.mark.skipif(not has_module("agentwall.cli.start"), reason="needs `agentwall start`")
def test_audit_none_is_refused_not_faked() -> None:
    assert "--unsafe-no-audit" not in _bench_start_help()  # no such mode today
    done = _bench("--audit", "none", "--calls", "10", "--concurrency", "1")
    assert done.returncode == 1
    assert "--audit none is unsupported" in done.stderr


def _bench_start_help() -> str:
    return subprocess.run(
        [sys.executable, "-m", "agentwall", "start", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout


@pytest.mark.skipif(not has_module("agentwall.cli.start"), reason="needs `agentwall start`")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stopped_bench_stops_everything_it_started(tmp_path: Path, stop: signal.Signals) -> None:
    # `timeout 60 agentwall bench`, a CI job cancelled, a closed terminal, or
    # Ctrl-C: the upstream, the whole `agentwall start` tree and the load
    # processes stop, and the bench's temporary directory goes.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    bench = subprocess.Popen(
        [sys.executable, "-m", "agentwall", "bench", "--concurrency", "1", "--duration", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # pytest may run with SIGINT ignored (a background job): Ctrl-C must
        # reach the bench as it would from a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 120
        # Measuring: the proxy, its workers and writer, and a load process.
        while time.monotonic() < deadline and bench.poll() is None:
            seen.update(procstat.descendants(bench.pid))
            names = {" ".join(procstat.cmdline(p)) for p in seen}
            if any("agentwall.benchtool.worker" in n for n in names) and any(
                "agentwall start" in n for n in names
            ):
                break
            time.sleep(0.1)
        assert bench.poll() is None, bench.communicate()
        seen.update(procstat.descendants(bench.pid))
        assert len(seen) >= 5, seen  # upstream, supervisor, writer, zygote/workers, load
        bench.send_signal(stop)
        _out, err = bench.communicate(timeout=120)
        assert bench.returncode == 128 + stop, err
        assert ("interrupted" if stop == signal.SIGINT else f"stopped by {stop.name}") in err
        assert "Traceback" not in err
        left = {p: procstat.cmdline(p) for p in procstat.survivors_after(seen, 60)}
        assert not left, left
        assert not list(tmp_path.glob("agentwall-bench-*"))
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        procstat.kill_survivors(seen)  # whatever a failure left behind


def test_an_unreachable_upstream_is_named_at_once() -> None:
    port = free_port()  # bound and closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/mcp"
    done = _bench("--upstream", url, "--concurrency", "1", "--calls", "10")
    assert done.returncode == 1
    assert f"--upstream {url}: cannot connect" in done.stderr
    assert "Traceback" not in done.stderr
