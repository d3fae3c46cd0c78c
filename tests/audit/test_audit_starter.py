"""init --from-log's generator: whatever an agent did, the starter policy loads
and allows it (Safe Mode's denials aside), and stays tight."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agentwall.audit.starter import path_roots, starter_policy, url_pattern, yaml_str
from agentwall.policy import evaluate, load_policy
from agentwall.policy.cases import make_test_call

SAFE_ONLY = load_policy(None)

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
segments = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=8)
paths = st.builds(
    lambda parts, ext: "/" + "/".join(parts) + ext,
    st.lists(segments, min_size=1, max_size=4),
    st.sampled_from(["", ".txt", ".py"]),
)
urls = st.builds(lambda host, path: f"https://{host}.example.com/{path}", segments, segments)
scalars = st.one_of(
    st.text(max_size=20),
    st.integers(-(2**40), 2**40),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    paths,
    urls,
    st.none(),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)
arguments = st.dictionaries(names, values, max_size=4)
calls = st.lists(
    st.tuples(st.sampled_from(["read", "write", "fetch", "ünï", "a b"]), arguments),
    min_size=1,
    max_size=12,
)


def entry(i: int, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": "decision",
        "seq": i + 1,
        "ts": "2025-01-01T00:00:00.000000Z",
        "session": "s",
        "method": "tools/call",
        "target": tool,
        "decision": "allow",
        "params": {"name": tool, "arguments": args},
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(observed=calls)
# Found by this test in the fifth session: NFKC folds "¯" to " \u0304", so a
# root of "/¯" did not admit the path "/¯" itself.
@example(observed=[("read", {"0": "/\u00af"})])
def test_every_observed_call_is_allowed(
    tmp_path_factory: Any, observed: list[tuple[str, dict[str, Any]]]
) -> None:
    # What Safe Mode denies stays denied; the log records that as such.
    kept = [
        (tool, args)
        for tool, args in observed
        if evaluate(
            SAFE_ONLY,
            make_test_call("tools/call", {"name": tool, "arguments": args}, index=0, target=tool),
            0,
        ).verdict
        == "allow"
    ]
    entries = [entry(i, tool, args) for i, (tool, args) in enumerate(kept)]
    starter = starter_policy(entries)
    path = Path(tmp_path_factory.mktemp("starter")) / "policy.yaml"
    path.write_text(starter.text, encoding="utf-8")
    policy = load_policy(path)
    for i, (tool, args) in enumerate(kept):
        call = make_test_call("tools/call", {"name": tool, "arguments": args}, index=i, target=tool)
        decision = evaluate(policy, call, 0)
        assert decision.verdict == "allow", (decision, starter.text)
    # Tight: a tool the agent never called is denied.
    unknown = make_test_call(
        "tools/call", {"name": "never", "arguments": {}}, index=0, target="never"
    )
    assert evaluate(policy, unknown, 0).verdict == "deny"


def test_path_roots() -> None:
    assert path_roots(["/workspace/a.txt", "/workspace/src/b.py"]) == ["/workspace"]
    assert path_roots(["/workspace"]) == ["/workspace"]
    assert path_roots(["/workspace/a.txt", "/tmp/x/y.log"]) == ["/tmp/x", "/workspace"]
    assert path_roots(["/a.txt"]) == ["/"]


def test_path_roots_admit_what_they_were_made_from() -> None:
    # A spelling NFKC folds elsewhere widens its root until the folded form
    # is inside too (the evaluator's rule for within:).
    assert path_roots(["/\u00af"]) == ["/"]
    assert path_roots(["/data/\u00af/x.txt", "/data/a.txt"]) == ["/data"]
    # Fullwidth "a" folds to "a": "/data/a/x.txt" is not under "/data/\uff41".
    assert path_roots(["/data/\uff41/x.txt"]) == ["/data"]
    # An encoded separator is refused whatever the root: no within at all.
    assert path_roots(["/workspace/%2e%2e/x.txt"]) is None


def test_url_pattern_and_yaml_strings() -> None:
    pattern, origins = url_pattern(["https://a.example.com/x", "http://b.org:8080/?q"])
    assert origins == ["http://b.org:8080", "https://a.example.com"]
    assert "a\\.example\\.com" in pattern
    assert yaml_str('a"b\\c\n\x85\u2028é') == '"a\\"b\\\\c\\n\\u0085\\u2028é"'


@given(text=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",))))
def test_yaml_str_reads_back_exactly(text: str) -> None:
    import yaml

    assert yaml.safe_load(f"x: {yaml_str(text)}") == {"x": text}
