"""The bench report's warning about the host's steal, and its CPU split by process."""

from __future__ import annotations

from agentwall.benchtool.report import STEAL_WARNING_SHARE, cpu_by_process_line, steal_warning


def test_a_quiet_host_gets_no_warning() -> None:
    assert steal_warning([0.0, 0.05, 0.19], 2) is None


def test_steal_over_a_tenth_of_the_machine_is_called_out() -> None:
    line = steal_warning([0.05, 0.81, 0.47], 2)
    assert line is not None
    assert "0.81 of 2 cores" in line
    assert "(40%)" in line
    assert "compare direct with proxied within this run" in line


def test_the_threshold_is_a_share_of_the_machine() -> None:
    at = STEAL_WARNING_SHARE * 8
    assert steal_warning([at - 0.01], 8) is None
    assert steal_warning([at], 8) is not None
    # The same 0.5 core is noise on 8 cores and a quarter of a 2-core machine.
    assert steal_warning([0.5], 8) is None
    assert steal_warning([0.5], 2) is not None


def test_nothing_known_says_nothing() -> None:
    assert steal_warning([], 2) is None
    assert steal_warning([1.0], None) is None
    assert steal_warning([1.0], 0) is None


def test_cpu_by_process_follows_the_call() -> None:
    line = cpu_by_process_line(
        64, {"audit writer": 38.2, "other": 1.0, "evaluators": 54.4, "front-end": 1267.0}
    )
    assert line == (
        "proxy CPU per call at 64 clients by process (us, /proc): "
        "front-end 1,267, evaluators 54, audit writer 38, other 1"
    )
