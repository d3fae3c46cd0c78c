"""Percentiles, Prometheus parsing, /proc CPU accounting and the workload mix."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson
import pytest

from agentwall.benchtool import metrics, procstat
from agentwall.benchtool.stats import percentile, summarize
from agentwall.benchtool.workload import default_mix, filler


def test_nearest_rank_percentiles() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7], 99) == 7
    summary = summarize([1000, 2000, 3000, 4000])
    assert summary is not None
    assert (summary.p50, summary.max, summary.mean) == (2.0, 4.0, 2.5)
    assert summarize([]) is None
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


PROM = """\
# HELP agentwall_audit_fsync_batch_size entries per fsync
# TYPE agentwall_audit_fsync_batch_size histogram
agentwall_audit_fsync_batch_size_bucket{le="1"} 3
agentwall_audit_fsync_batch_size_sum 120
agentwall_audit_fsync_batch_size_count 10
agentwall_decision_cache_hits_total{shard="a"} 30
agentwall_decision_cache_hits_total{shard="b",note="x\\"y"} 50
agentwall_decision_cache_misses_total 20
weird_nan NaN
"""


def test_prometheus_parse_and_figures() -> None:
    before = metrics.Scrape(metrics.parse(PROM))
    after_text = (
        PROM.replace("_sum 120", "_sum 220")
        .replace("_count 10", "_count 15")
        .replace("misses_total 20", "misses_total 40")
    )
    after = metrics.Scrape(metrics.parse(after_text))
    assert before.total("agentwall_decision_cache_hits_total") == 80
    assert before.total("agentwall_decision_cache_hits_total", shard="b") == 50
    assert dict(before.samples[4].labels)["note"] == 'x"y'
    figs = metrics.figures(before, after)
    assert figs.fsync_batches == 5
    assert figs.fsync_batch_mean == 20
    assert figs.cache_hit_rate == 0.0  # hits did not move, misses did
    assert figs.cache_lookups == 20


def test_missing_series_are_none_not_zero() -> None:
    empty = metrics.Scrape(metrics.parse("other_metric 1\n"))
    figs = metrics.figures(empty, empty)
    assert (figs.fsync_batch_mean, figs.cache_hit_rate) == (None, None)


# A child's whole job: 0.3 s of CPU, however long the machine takes to give it.
BURN = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.3: pass\n"


def wait_for_cpu(pid: int, seconds: float, deadline: float) -> None:
    """Until ``pid`` has used ``seconds`` of CPU (a bound, not a measurement:
    the burner stops itself after 0.3 s of CPU, however long that takes)."""
    while time.monotonic() < deadline:
        stat = procstat.read_stat(pid)
        assert stat is not None
        if stat.self_ticks / procstat.CLK_TCK >= seconds:
            return
        time.sleep(0.05)


@pytest.mark.timeout(60)
def test_tree_cpu_counts_children_including_exited_ones() -> None:
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {BURN!r}])\n"
        f"exec({BURN!r})\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        probe = procstat.TreeProbe(lambda: [proc.pid])
        probe.start()
        wait_for_cpu(proc.pid, 0.28, time.monotonic() + 30)
        probe.stop()
        # The exited child's 0.3 s came back through the parent's cutime.
        assert probe.cpu_s >= 0.5
        assert probe.processes == 1
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.timeout(60)
def test_tree_cpu_is_split_by_role() -> None:
    # A parent that only waits, and a live child that burns 0.3 s of CPU:
    # the breakdown must put the CPU in the child's role, not the root's.
    code = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', {BURN!r} + 'time.sleep(30)'])\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        child = None
        while child is None and time.monotonic() < deadline:
            child = next(iter(procstat.descendants(proc.pid)), None)
            time.sleep(0.02)
        assert child is not None, "the child never started"
        probe = procstat.TreeProbe(
            lambda: [proc.pid], role=lambda pid: "root" if pid == proc.pid else "child"
        )
        probe.start()
        wait_for_cpu(child, 0.28, deadline)
        probe.stop()
        assert probe.processes == 2
        assert probe.cpu_by_role_s["child"] > 0
        assert probe.cpu_by_role_s["child"] > probe.cpu_by_role_s.get("root", 0.0)
        assert sum(probe.cpu_by_role_s.values()) == pytest.approx(probe.cpu_s)
    finally:
        for pid in procstat.descendants(proc.pid):
            os.kill(pid, 9)
        proc.kill()
        proc.wait()


def test_proxy_role_knows_the_root_and_gives_up_on_the_unknown() -> None:
    # The writer and evaluator roles are checked on a real `agentwall start`
    # tree in tests/benchtool/test_bench_cli.py.
    role = procstat.proxy_role(os.getpid())
    assert role(os.getpid()) == "front-end"
    assert role(2**22 + 12345) == "other"  # no such process: no command line


def test_own_process_is_readable() -> None:
    stat = procstat.read_stat(os.getpid())
    assert stat is not None
    assert stat.ppid == os.getppid()
    assert "python" in " ".join(procstat.cmdline(os.getpid())).lower()


def test_workload_mix_shape() -> None:
    mix = default_mix()
    schedule = mix.schedule(seed=3)
    assert len(schedule) == 200
    assert mix.schedule(seed=3) == schedule
    share = {e: 0 for e in ("allow", "deny", "list")}
    for i in schedule:
        share[mix.kinds[i].expect] += 1
    assert share == {"allow": 160, "deny": 24, "list": 16}
    biggest = max(len(k.body(1)) for k in mix.kinds)
    assert 64 * 1024 < biggest < 65 * 1024
    for kind in mix.kinds:
        message = orjson.loads(kind.body(42, b"tag"))
        assert message["jsonrpc"] == "2.0"
        assert message["id"] == 42
    # Unique kinds never repeat their arguments; the others repeat exactly.
    echo = mix.kinds[mix.index("echo_tiny")]
    assert orjson.loads(echo.body(1, b"a"))["params"] != orjson.loads(echo.body(2, b"a"))["params"]
    assert orjson.loads(echo.body(1, b"a"))["params"]["arguments"]["text"] == "a.1 hello"
    search = mix.kinds[mix.index("search")]
    assert orjson.loads(search.body(1, b"a"))["params"] == orjson.loads(search.body(2))["params"]
    assert len(filler(1000)) == 1000


def test_fsync_batches_from_entry_and_batch_counters() -> None:
    before = metrics.Scrape(
        metrics.parse("agentwall_audit_entries_total 100\nagentwall_audit_batches_total 10\n")
    )
    after = metrics.Scrape(
        metrics.parse("agentwall_audit_entries_total 400\nagentwall_audit_batches_total 30\n")
    )
    figs = metrics.figures(before, after)
    assert (figs.fsync_batches, figs.fsync_batch_mean) == (20, 15)


def test_stage_means_from_seconds_histograms() -> None:
    text = (
        'agentwall_audit_seconds_bucket{le="0.001"} 5\n'
        "agentwall_audit_seconds_sum %s\nagentwall_audit_seconds_count %s\n"
        "agentwall_upstream_seconds_sum 1.0\n"  # no _count: skipped
    )
    before = metrics.Scrape(metrics.parse(text % (0.5, 1000)))
    after = metrics.Scrape(metrics.parse(text % (0.8, 2000)))
    stages = metrics.stage_means(before, after)
    assert list(stages) == ["audit"]
    mean_us, n = stages["audit"]
    assert n == 1000
    assert mean_us == pytest.approx(300.0)


def test_machine_probe_accounts_for_every_core() -> None:
    probe = procstat.MachineProbe()
    probe.start()
    # Busy work of 0.5 CPU-seconds in this thread, so the window holds some
    # whatever the host steals.  /proc/stat counts in 10 ms clock ticks: over
    # a window that long, tick rounding is a few hundredths of a core.
    started = time.thread_time()
    while time.thread_time() < started + 0.5:
        pass
    burned = time.thread_time() - started
    probe.stop()
    cores = probe.cores
    assert cores is not None
    # Not a speed check: one thread cannot burn more CPU than the wall-clock
    # window it ran in, so a window that holds the busy work is at least that
    # long, on any host.
    assert probe.wall_s >= burned
    assert min(cores.busy, cores.idle, cores.steal) >= 0
    assert cores.busy > 0
    # busy + idle + steal is the whole machine.
    assert abs(cores.busy + cores.idle + cores.steal - (os.cpu_count() or 1)) < 0.5


def test_machine_probe_without_a_window_reports_nothing() -> None:
    probe = procstat.MachineProbe()
    probe.stop()  # never started
    assert probe.cores is None


@pytest.mark.timeout(60)
def test_survivors_are_running_processes_of_the_same_start() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stat = procstat.read_stat(child.pid)
        assert stat is not None
        seen = {child.pid: stat.start_ticks}
        assert procstat.survivors(seen) == [child.pid]
        # Same PID, another start time: someone else's process now.
        assert procstat.survivors({child.pid: stat.start_ticks + 1}) == []
        child.kill()
        deadline = time.monotonic() + 30  # a bound on how long a failure takes to show
        while (s := procstat.read_stat(child.pid)) is not None and s.state != "Z":
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert s is not None, "the child was reaped by someone else"
        assert s.state == "Z", "the child never died"
        # Dead but not reaped yet (a zombie) is not a survivor.
        assert procstat.survivors(seen) == []
    finally:
        child.kill()
        child.wait()
    assert procstat.survivors(seen) == []
