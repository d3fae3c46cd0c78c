"""build_report: a call is counted once, by its last entry (docs/audit.md,
"Two entries for one call id")."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agentwall.audit.report import build_report, render_text


def _decision(
    seq: int,
    call_id: str | None,
    outcome: str,
    *,
    tool: str = "echo",
    session: str = "s1",
    latency_us: int = 100,
    policy_hash: str = "p1",
    category: str | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "seq": seq,
        "ts": f"2026-11-22T00:00:{seq:02d}Z",
        "event": "decision",
        "decision": outcome,
        "method": "tools/call",
        "target": tool,
        "session": session,
        "latency_us": latency_us,
        "policy_hash": policy_hash,
        "reason": f"{outcome} reason",
    }
    if call_id is not None:
        entry["call_id"] = call_id
    if category is not None:
        entry["category"] = category
    return entry


def _start(seq: int) -> dict[str, Any]:
    return {"seq": seq, "ts": f"2026-11-22T00:00:{seq:02d}Z", "event": "proxy_start"}


def test_a_worker_entry_followed_by_the_front_ends_deny_counts_once_as_the_deny() -> None:
    # The worker made "allow" durable, then died; the agent was told "deny".
    report = build_report(
        [
            _start(0),
            _decision(1, "ab-1", "allow", latency_us=50),
            _decision(2, "ab-2", "allow", tool="other", latency_us=70),
            _decision(3, "ab-1", "deny", latency_us=900, category="evaluator_crash"),
        ]
    )
    assert report.entries == 4
    assert report.superseded == 1
    d = report.decisions
    assert (d.total, d.allow, d.deny) == (2, 1, 1)
    assert report.per_tool["echo"].total == 1
    assert report.per_tool["echo"].deny == 1
    assert report.per_tool["other"].allow == 1
    assert report.per_session["s1"].total == 2
    assert report.per_method["tools/call"].total == 2
    assert [i.call_id for i in report.denied] == ["ab-1"]
    assert report.denied[0].category == "evaluator_crash"
    assert report.latency.count == 2
    assert report.latency.max_us == 900
    assert report.policy_hashes[0].decisions == 2
    assert "1 calls had two entries" in render_text(report)


def test_a_superseded_denial_leaves_the_incident_list() -> None:
    report = build_report([_decision(1, "c-1", "deny"), _decision(2, "c-1", "error")])
    assert [(i.seq, i.decision) for i in report.denied] == [(2, "error")]
    assert (report.decisions.total, report.decisions.deny, report.decisions.error) == (1, 0, 1)


def test_a_row_emptied_by_a_later_entry_is_not_shown() -> None:
    # The session key of the first entry differs (it cannot in practice, but
    # a row must not linger at zero whatever the later entry says).
    report = build_report(
        [_decision(1, "c-1", "allow", session="a"), _decision(2, "c-1", "deny", session="b")]
    )
    assert list(report.per_session) == ["b"]


def test_call_ids_are_scoped_to_one_run_of_the_proxy() -> None:
    # The same id in two runs (a prefix collision) is two calls, not one.
    report = build_report(
        [_start(0), _decision(1, "ab-1", "allow"), _start(2), _decision(3, "ab-1", "deny")]
    )
    assert report.superseded == 0
    assert (report.decisions.total, report.decisions.allow, report.decisions.deny) == (2, 1, 1)


def test_entries_without_a_call_id_each_count() -> None:
    report = build_report([_decision(1, None, "allow"), _decision(2, None, "allow")])
    assert report.decisions.total == 2
    assert report.superseded == 0
    assert report.latency.count == 2


_OUTCOMES = st.sampled_from(["allow", "deny", "error", "dry_run_deny", "redact"])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), _OUTCOMES, st.sampled_from(["t1", "t2"]), st.booleans()),
        max_size=30,
    )
)
def test_counts_equal_those_of_the_last_entry_per_call(
    steps: list[tuple[int, str, str, bool]],
) -> None:
    """Against a plain oracle: keep each call's last entry within its run."""
    entries: list[dict[str, Any]] = []
    last: dict[tuple[int, str], tuple[str, str, int]] = {}
    run = 0
    for seq, (n, outcome, tool, restart) in enumerate(steps):
        if restart:
            run += 1
            entries.append(_start(seq))
            continue
        call_id = f"r-{n}"
        entries.append(_decision(seq, call_id, outcome, tool=tool, latency_us=seq))
        last[(run, call_id)] = (outcome, tool, seq)
    report = build_report(entries)
    kept = list(last.values())
    assert report.decisions.total == len(kept)
    assert report.decisions.allow == sum(o == "allow" for o, _, _ in kept)
    assert report.decisions.deny == sum(o == "deny" for o, _, _ in kept)
    for tool in ("t1", "t2"):
        want = sum(t == tool for _, t, _ in kept)
        assert (report.per_tool[tool].total if tool in report.per_tool else 0) == want
    assert sorted(i.seq or 0 for i in report.denied) == sorted(
        s for o, _, s in kept if o in ("deny", "error", "dry_run_deny")
    )
    assert report.latency.count == len(kept)
    assert report.latency.max_us == (max(s for _, _, s in kept) if kept else None)
    assert report.superseded == sum(1 for e in entries if e["event"] == "decision") - len(kept)
