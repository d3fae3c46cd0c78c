"""The regression gate's arithmetic on pytest-benchmark JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentwall.benchtool import gate


def _results(
    calibration_ns: float, medians_s: dict[str, float], extra: dict[str, float] | None = None
) -> dict[str, Any]:
    benchmarks: list[dict[str, Any]] = [
        {"fullname": name, "stats": {"median": median}, "extra_info": {}}
        for name, median in medians_s.items()
    ]
    if extra is not None:
        benchmarks.append(
            {
                "fullname": "bench/bench_e2e.py::test_gate",
                "stats": {"median": 9.0},
                "extra_info": {"gate": extra},
            }
        )
    return {"benchmarks": benchmarks, "calibration": {"median_ns": calibration_ns}}


BASE = _results(1000.0, {"b::parse": 2e-6, "b::seal": 5e-6}, {"e2e_overhead_c1": 2.0})


def _baseline() -> dict[str, Any]:
    figs = gate.figures(BASE)
    metrics = {name: {"value": f.value} for name, f in figs.items()}
    metrics["e2e_overhead_c1"]["floor"] = 0.5
    return {"threshold": 2.0, "metrics": metrics}


def test_figures_normalise_by_calibration_and_skip_gate_test_timing() -> None:
    figs = gate.figures(BASE)
    assert figs["b::parse"].value == pytest.approx(2.0)
    assert figs["b::seal"].value == pytest.approx(5.0)
    assert figs["e2e_overhead_c1"].value == 2.0
    assert figs["e2e_overhead_c1"].source == "bench/bench_e2e.py::test_gate"
    assert "bench/bench_e2e.py::test_gate" not in figs


def test_uniformly_slower_machine_passes() -> None:
    slow = _results(3000.0, {"b::parse": 6e-6, "b::seal": 15e-6}, {"e2e_overhead_c1": 2.1})
    verdicts = gate.compare(_baseline(), gate.figures(slow), 2.0)
    assert not any(v.failed for v in verdicts)


def test_real_2x_regression_fails_and_noise_does_not() -> None:
    noisy = _results(1000.0, {"b::parse": 3.5e-6, "b::seal": 5e-6}, {"e2e_overhead_c1": 3.0})
    assert not any(v.failed for v in gate.compare(_baseline(), gate.figures(noisy), 2.0))
    regressed = _results(1000.0, {"b::parse": 4.4e-6, "b::seal": 5e-6}, {"e2e_overhead_c1": 4.5})
    failed = {v.name for v in gate.compare(_baseline(), gate.figures(regressed), 2.0) if v.failed}
    assert failed == {"b::parse", "e2e_overhead_c1"}


def test_limit_follows_the_slowest_baseline_pass() -> None:
    # Passes recorded at 1.0 and 2.0 (this machine's noise): 3.0 is within 2x of
    # the slowest pass, 4.5 is not; a stable figure is still held to 2x.
    base = {
        "threshold": 2.0,
        "metrics": {
            "noisy": {"value": 1.0, "passes": [1.0, 2.0, 1.1]},
            "stable": {"value": 1.0, "passes": [1.0, 1.05, 0.98]},
        },
    }
    now = {
        "noisy": gate.Figure("noisy", 3.0, "x", "extra"),
        "stable": gate.Figure("stable", 2.2, "x", "extra"),
    }
    failed = {v.name for v in gate.compare(base, now, 2.0) if v.failed}
    assert failed == {"stable"}
    now["noisy"] = gate.Figure("noisy", 4.5, "x", "extra")
    failed = {v.name for v in gate.compare(base, now, 2.0) if v.failed}
    assert failed == {"noisy", "stable"}


def test_floor_keeps_tiny_ratios_from_flapping() -> None:
    base = {"threshold": 2.0, "metrics": {"e2e_stdio_overhead": {"value": 0.05, "floor": 0.5}}}
    now = {"e2e_stdio_overhead": gate.Figure("e2e_stdio_overhead", 0.3, "x", "extra")}
    assert not gate.compare(base, now, 2.0)[0].failed
    now["e2e_stdio_overhead"] = gate.Figure("e2e_stdio_overhead", 1.2, "x", "extra")
    assert gate.compare(base, now, 2.0)[0].failed


def test_missing_and_new_figures_are_reported_not_failed() -> None:
    partial = _results(1000.0, {"b::parse": 2e-6, "b::new": 1e-6})
    figs = gate.figures(partial)
    verdicts = gate.compare(_baseline(), figs, 2.0)
    assert not any(v.failed for v in verdicts)
    text = gate.render(verdicts, figs, _baseline())
    assert "not measured" in text
    assert "b::new" in text
    assert "new: not gated" in text


def test_median_alone_over_the_limit_is_noise_when_the_fastest_rounds_are_fine() -> None:
    def run(cal: dict[str, float], median: float, fastest: float) -> dict[str, Any]:
        return {
            "calibration": {"median_ns": 1000.0, "samples_ns": [1000.0]},
            "benchmarks": [
                {
                    "fullname": "b::eval",
                    "stats": {"median": median, "min": fastest},
                    "extra_info": {"calibration_ns": cal},
                }
            ],
        }

    base_fig = gate.figures(run({"median": 500.0, "min": 400.0}, 2e-6, 1e-6))["b::eval"]
    assert base_fig.value == pytest.approx(4.0)  # divided by the local calibration
    assert base_fig.value_min == pytest.approx(2.5)
    baseline = {"metrics": {"b::eval": {"value": 4.0, "value_min": 2.5}}}
    burst = gate.figures(run({"median": 500.0, "min": 400.0}, 5e-6, 1.1e-6))
    assert not gate.compare(baseline, burst, 2.0)[0].failed
    regressed = gate.figures(run({"median": 500.0, "min": 400.0}, 5e-6, 2.5e-6))
    assert gate.compare(baseline, regressed, 2.0)[0].failed


def test_e2e_figure_fails_only_if_its_fastest_view_regressed_too() -> None:
    def run(median: float, fastest: float) -> dict[str, Any]:
        return {
            "calibration": {"median_ns": 1000.0},
            "benchmarks": [
                {
                    "fullname": "bench/bench_e2e.py::test_gate_stdio_overhead",
                    "stats": {"median": 1.0, "min": 1.0},
                    "extra_info": {
                        "gate": {"e2e_stdio_overhead": median},
                        "gate_min": {"e2e_stdio_overhead": fastest},
                    },
                }
            ],
        }

    fig = gate.figures(run(10.0, 6.0))["e2e_stdio_overhead"]
    assert (fig.value, fig.value_min) == (10.0, 6.0)
    baseline = {"metrics": {"e2e_stdio_overhead": {"value": 10.0, "value_min": 6.0, "floor": 0.5}}}
    disk_burst = gate.figures(run(60.0, 7.0))
    assert not gate.compare(baseline, disk_burst, 2.0)[0].failed
    regressed = gate.figures(run(25.0, 13.0))
    assert gate.compare(baseline, regressed, 2.0)[0].failed


def test_missing_calibration_is_an_error() -> None:
    with pytest.raises(gate.GateError, match="calibration"):
        gate.figures({"benchmarks": []})


def test_committed_baseline_is_well_formed() -> None:
    data = json.loads(Path(gate.BASELINE).read_text())
    assert data["threshold"] == 2.0
    assert data["metrics"]
    for entry in data["metrics"].values():
        assert entry["value"] > 0
    # Every syscall-bound figure has its second view, and only those do.
    for name, entry in data["metrics"].items():
        assert ("per_syscall" in entry) == (name in data.get("syscall_bound", {})), name
        if "per_syscall" in entry:
            assert entry["per_syscall"]["value"] > 0
            assert entry["per_syscall"]["passes"]


def _many(scale: dict[str, float], base: float = 1.0) -> dict[str, gate.Figure]:
    return {
        name: gate.Figure(name, base * factor, name, "median/calibration", base * factor)
        for name, factor in scale.items()
    }


def test_a_differently_balanced_machine_shifts_limits_by_the_median_ratio() -> None:
    # CI's runner: unchanged code, micro figures 1.0-2.1x their baseline.
    names = [f"b::f{i}" for i in range(12)]
    baseline = {
        "metrics": {n: {"value": 1.0, "value_min": 1.0} for n in names},
    }
    shifted = dict(
        zip(names, [1.0, 1.1, 1.3, 1.3, 1.4, 1.5, 1.5, 1.6, 1.9, 2.0, 2.05, 2.1], strict=True)
    )
    verdicts = gate.compare(baseline, _many(shifted), 2.0)
    assert not any(v.failed for v in verdicts)
    assert verdicts[0].machine_factor == pytest.approx(1.5)
    assert "machine factor" in gate.render(verdicts, _many(shifted), baseline)
    # A real regression is out of line with the rest of the same run.
    shifted["b::f3"] = 4.0
    failed = {v.name for v in gate.compare(baseline, _many(shifted), 2.0) if v.failed}
    assert failed == {"b::f3"}


def test_machine_factor_never_tightens_and_needs_many_figures() -> None:
    assert gate.machine_factor([0.5] * 20) == 1.0
    assert gate.machine_factor([3.0] * 3) == 1.0
    assert gate.machine_factor([1.0] * 5 + [3.0] * 6) == 3.0


def test_machine_factor_does_not_loosen_e2e_ratios() -> None:
    names = [f"b::f{i}" for i in range(10)]
    baseline = {"metrics": {n: {"value": 1.0} for n in names}}
    baseline["metrics"]["e2e_overhead_c1"] = {"value": 1.0}
    now = _many(dict.fromkeys(names, 1.8))
    now["e2e_overhead_c1"] = gate.Figure("e2e_overhead_c1", 2.5, "x", "extra")
    failed = {v.name for v in gate.compare(baseline, now, 2.0) if v.failed}
    assert failed == {"e2e_overhead_c1"}


def _syscall_results(cpu_ns: float, sys_ns: float, median_s: float) -> dict[str, Any]:
    return {
        "benchmarks": [
            {
                "fullname": "b::take",
                "stats": {"median": median_s, "min": median_s},
                "extra_info": {
                    "calibration_ns": {
                        "median": cpu_ns,
                        "min": cpu_ns,
                        "syscall_median": sys_ns,
                        "syscall_min": sys_ns,
                    }
                },
            }
        ],
        "calibration": {"median_ns": cpu_ns, "syscall_median_ns": sys_ns},
    }


def _syscall_baseline() -> dict[str, Any]:
    # Recorded on a host where a lock pair costs 1,000 ns and the CPU loop 1,000 ns.
    fig = gate.figures(_syscall_results(1000.0, 1000.0, 2.5e-6))["b::take"]
    assert (fig.value, fig.per_syscall) == (pytest.approx(2.5), pytest.approx(2.5))
    return {
        "metrics": {
            "b::take": {
                "value": fig.value,
                "value_min": fig.value_min,
                "per_syscall": {"value": 2.5, "passes": [2.5], "value_min": 2.5},
            }
        },
        "syscall_bound": {"b::take": "two lockf calls per operation"},
    }


def test_a_host_with_dearer_system_calls_passes_a_syscall_bound_figure() -> None:
    """The new host of the tenth session: system calls ~4x dearer against the
    CPU loop.  The CPU view is over its limit; the per-syscall view is not."""
    now = gate.figures(_syscall_results(1000.0, 4000.0, 9.0e-6))
    [verdict] = gate.compare(_syscall_baseline(), now, 2.0)
    assert verdict.over
    assert not verdict.failed
    assert "per system call: 0.90x" in gate.render([verdict], now, _syscall_baseline())


def test_a_host_with_cheaper_system_calls_passes_it_too() -> None:
    # The per-syscall view is over (syscalls 4x cheaper), the CPU view is fine.
    now = gate.figures(_syscall_results(1000.0, 250.0, 2.6e-6))
    [verdict] = gate.compare(_syscall_baseline(), now, 2.0)
    assert verdict.per_syscall is not None
    assert verdict.per_syscall.over
    assert not verdict.failed


def test_a_real_regression_of_a_syscall_bound_figure_fails_in_both_views() -> None:
    now = gate.figures(_syscall_results(1000.0, 1000.0, 6.0e-6))
    [verdict] = gate.compare(_syscall_baseline(), now, 2.0)
    assert verdict.failed
    # And on the host with dearer system calls, a regression still shows.
    slow_host = gate.figures(_syscall_results(1000.0, 4000.0, 21.0e-6))
    assert gate.compare(_syscall_baseline(), slow_host, 2.0)[0].failed


def test_a_retry_keeps_the_better_measurement_of_each_view() -> None:
    first = gate.figures(_syscall_results(1000.0, 1000.0, 6.0e-6))
    [verdict] = gate.compare(_syscall_baseline(), first, 2.0)
    assert verdict.failed
    retry = gate.figures(_syscall_results(1000.0, 1000.0, 2.6e-6))["b::take"]
    assert verdict.take(retry)
    assert not verdict.failed
    assert verdict.per_syscall is not None
    assert verdict.per_syscall.current == pytest.approx(2.6)


def test_figures_without_a_syscall_calibration_have_no_second_view() -> None:
    fig = gate.figures(BASE)["b::parse"]
    assert fig.per_syscall is None
    verdicts = gate.compare(_baseline(), gate.figures(BASE), 2.0)
    assert all(v.per_syscall is None for v in verdicts)


def test_update_records_each_view_from_its_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--update: the median pass and every pass, the quietest fastest round,
    the second view only for the listed syscall-bound figures, and the old
    file's floors, lists and threshold kept."""
    medians = iter([2.0e-6, 3.0e-6, 2.5e-6])

    def one_pass(nodes: Any, **_: Any) -> dict[str, Any]:
        data = _syscall_results(1000.0, 500.0, next(medians))
        data["benchmarks"].append(
            {"fullname": "b::plain", "stats": {"median": 1e-6}, "extra_info": {}}
        )
        return data

    monkeypatch.setattr(gate, "run_pass", one_pass)
    path = tmp_path / "baseline.json"
    path.write_text(
        json.dumps(
            {
                "threshold": 2.0,
                "metrics": {"b::plain": {"value": 1.0, "floor": 0.5}},
                "not_gated": {"b::other": "reason"},
                "syscall_bound": {"b::take": "two lockf calls per operation"},
            }
        )
    )
    assert gate.main(["--update", "--baseline", str(path)]) == 0
    data = json.loads(path.read_text())
    take = data["metrics"]["b::take"]
    assert take["passes"] == pytest.approx([2.0, 3.0, 2.5])
    assert take["value"] == pytest.approx(2.5)
    assert take["value_min"] == pytest.approx(2.0)
    assert take["kind"] == "median/calibration"
    assert take["source"] == "b::take"
    assert take["per_syscall"]["passes"] == pytest.approx([4.0, 6.0, 5.0])
    assert take["per_syscall"]["value"] == pytest.approx(5.0)
    assert take["per_syscall"]["value_min"] == pytest.approx(4.0)
    plain = data["metrics"]["b::plain"]
    assert "per_syscall" not in plain
    assert "value_min" not in plain  # its stats had no fastest round
    assert plain["floor"] == 0.5
    assert data["not_gated"] == {"b::other": "reason"}
    assert data["syscall_bound"] == {"b::take": "two lockf calls per operation"}
