"""harness_report: lining up direct and proxied conformance-harness runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness_report import compare, load_run, main, not_scored


def write_run(root: Path, scenario: str, statuses: list[tuple[str, str]]) -> None:
    run = root / f"server-{scenario}-2026-11-21T07-51-54-797Z"
    run.mkdir(parents=True)
    checks = [
        {
            "id": cid,
            "status": status,
            "errorMessage": f"{cid} broke" if status == "FAILURE" else None,
        }
        for cid, status in statuses
    ]
    (run / "checks.json").write_text(json.dumps(checks), encoding="utf-8")


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    direct, proxy = tmp_path / "direct", tmp_path / "proxy"
    write_run(direct, "ping", [("ping-a", "SUCCESS"), ("ping-b", "SUCCESS")])
    write_run(proxy, "ping", [("ping-a", "SUCCESS"), ("ping-b", "SUCCESS")])
    write_run(direct, "server-stateless", [("meta", "SUCCESS"), ("ack", "SUCCESS")])
    write_run(proxy, "server-stateless", [("meta", "FAILURE"), ("ack", "WARNING")])
    write_run(direct, "tasks-lifecycle", [("t1", "FAILURE"), ("t2", "SUCCESS")])
    write_run(proxy, "tasks-lifecycle", [("t1", "FAILURE"), ("t2", "FAILURE")])
    write_run(direct, "caching", [("c", "SUCCESS")])
    write_run(proxy, "caching", [("c", "FAILURE")])
    (proxy / "not-a-run").mkdir()
    return direct, proxy


def test_load_run_counts_statuses_and_names_failures(runs: tuple[Path, Path]) -> None:
    proxy = load_run(runs[1])
    assert set(proxy) == {"ping", "server-stateless", "tasks-lifecycle", "caching"}
    stateless = proxy["server-stateless"]
    assert (stateless.passed, stateless.failed, stateless.warnings) == (0, 1, 1)
    assert stateless.failures == (("meta", "meta broke"),)
    assert not stateless.ok
    assert proxy["ping"].ok


def test_compare_flags_only_scored_scenarios_that_pass_directly(
    runs: tuple[Path, Path], tmp_path: Path
) -> None:
    requirements = tmp_path / "req.yaml"
    requirements.write_text(
        "server: [ping]\nnot_scored:\n"
        "  - {scenario: caching, leg: server, reason: pending}\n"
        "  - {scenario: ping, leg: client, reason: extension}\n",
        encoding="utf-8",
    )
    unscored = not_scored(requirements)
    assert unscored == {"caching": "pending"}
    result = compare(load_run(runs[0]), load_run(runs[1]), unscored)
    # tasks-lifecycle already fails directly: not the proxy's doing.
    assert result.proxy_only_failures == ("server-stateless",)
    assert result.counts == {
        "scenarios": 4,
        "direct_pass": 3,
        "proxy_pass": 1,
        "proxy_only_fail": 2,
    }
    rows = {row[0]: row for row in result.rows}
    assert rows["caching"][1] == "no (pending)"
    assert rows["server-stateless"][2:4] == ("pass 2/2", "FAIL 0/1")
    assert "meta: meta broke" in rows["server-stateless"][4]
    assert "t2: t2 broke" in rows["tasks-lifecycle"][4]


def test_main_exits_1_on_a_proxy_only_failure_and_writes_markdown(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "summary.md"
    assert main(["--leg", "L", str(runs[0]), str(runs[1]), "--markdown", str(out)]) == 1
    assert "| server-stateless | yes | pass 2/2 | FAIL 0/1 |" in out.read_text()
    assert "== L" in capsys.readouterr().out
    same = tmp_path / "same"
    write_run(same, "ping", [("ping-a", "SUCCESS")])
    assert main(["--leg", "L", str(same), str(same)]) == 0
