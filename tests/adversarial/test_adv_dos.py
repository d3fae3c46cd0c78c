"""Red team: resource exhaustion.  Pathological regexes, huge and deep
documents, 100k-element arrays: every one returns a Decision (or a precise
FrameError) instead of hanging or raising.

No timings are asserted (the machine is shared); each test has a pytest
timeout far above the linear-time cost and many orders of magnitude below
what a backtracking engine would need, so a regression to backtracking or to
quadratic work shows up as a timeout.  Measured figures are in the report.
"""

from __future__ import annotations

from typing import Any

import pytest

from agentwall.core.canonical import canonical_json
from agentwall.core.jsonrpc import parse
from agentwall.errors import INVALID_REQUEST, FrameError, PolicyError
from agentwall.policy import evaluate, load_policy, loads_policy
from agentwall.types import Call

pytestmark = pytest.mark.timeout(60)

# Catastrophic for backtracking engines: (a+)+$ on "a"*30+"!" takes minutes
# in Python's re; here the inputs are 200,000 characters.
EVIL_PATTERNS = ["(a+)+", "(a|a)*b", "(a|aa)+c", "(x+x+)+y", "(.*a){20}", "([a-z]+)*[0-9]"]
EVIL_INPUT = "a" * 200_000 + "!"


def _call(name: str, args: dict[str, Any], *, encoded: bool = True) -> Call:
    params = {"name": name, "arguments": args}
    return Call(
        call_id="rt", session="rt", transport="stdio", origin="client", kind="request",
        rpc_id=1, method="tools/call", target=name, params=params,
        params_json=canonical_json(params) if encoded else b"", identity=None,
    )  # fmt: skip


def _policy_with(pattern: str) -> Any:
    quoted = pattern.replace("\\", "\\\\").replace('"', '\\"')
    return loads_policy(
        f"""\
version: "2"
default_action: deny
limits: {{max_bytes: 4194304}}
tools:
  - name: t
    action: allow
    parameters:
      - {{name: s, type: string, pattern: "{quoted}"}}
      - name: o
        type: object
        schema: {{type: object, properties: {{p: {{type: string, pattern: "{quoted}"}}}}}}
""",
        source_path="dos.yaml",
    )


@pytest.mark.parametrize("pattern", EVIL_PATTERNS)
def test_pathological_patterns_run_in_linear_time(pattern: str) -> None:
    policy = _policy_with(pattern)
    d = evaluate(policy, _call("t", {"s": EVIL_INPUT}), 0)
    assert d.verdict == "deny"
    assert d.rule_id == "tools[t].parameters[s].pattern"
    d = evaluate(policy, _call("t", {"o": {"p": EVIL_INPUT}}), 0)
    assert d.verdict == "deny"
    assert d.rule_id == "tools[t].parameters[o].schema"


@pytest.mark.parametrize(
    "pattern", [r"(a)\1", r"(?=a)a", r"(?!a)b", r"(?<=a)b", r"(?<!a)b", r"a++", r"(?>a)"]
)
def test_backtracking_only_syntax_is_a_load_error(pattern: str) -> None:
    with pytest.raises(PolicyError):
        _policy_with(pattern)


SAFE_ONLY = load_policy(None)

# Shapes that stress Safe Mode's normalisation (each ~450 KB of one string).
SAFE_MODE_STRESS = {
    "percent": "%25" * 150_000,
    "dots": "/.." * 150_000,
    "urls": "http://1.2.3.4 " * 30_000,
    "userinfo": "http://" + "@" * 450_000,
    "escapes": "\\u0041" * 75_000,
    "fullwidth": "／" * 150_000,
    "curl_words": "curl 1 " * 65_000,
    "rm_words": "rm -rf a " * 50_000,
    "pipes": "curl x |" * 50_000,
    "globs": "/etc/*?[" * 50_000,
    "glob_words": " ".join(f"/etc/s*{i}" for i in range(45_000)),
}


@pytest.mark.parametrize("shape", sorted(SAFE_MODE_STRESS))
def test_safe_mode_stays_linear_on_hostile_megabyte_strings(shape: str) -> None:
    d = evaluate(SAFE_ONLY, _call("t", {"s": SAFE_MODE_STRESS[shape]}), 0)
    assert d.verdict in ("allow", "deny")
    assert d.rule_id != "internal.error"


def test_wide_and_deep_params_get_a_decision() -> None:
    wide = {"a": list(range(100_000)), "b": [{"k": i} for i in range(20_000)]}
    d = evaluate(SAFE_ONLY, _call("t", wide), 0)
    assert d.verdict == "allow"
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    # (No encoding: the parser never lets this through; the evaluator must
    # still stop at the depth limit on its own.)
    d = evaluate(SAFE_ONLY, _call("t", {"d": deep}, encoded=False), 0)
    assert (d.verdict, d.rule_id) == ("deny", "limits.max_depth")


def test_parser_refuses_100k_nesting_without_recursing() -> None:
    for opener, closer in ((b"[", b"]"), (b'{"a":', b"}")):
        doc = (
            b'{"jsonrpc":"2.0","id":1,"method":"m","params":{"x":'
            + opener * 100_000
            + b"1"
            + closer * 100_000
            + b"}}"
        )
        with pytest.raises(FrameError) as info:
            parse(doc)
        assert info.value.rpc_code == INVALID_REQUEST


def test_parser_handles_a_batch_of_100k_items() -> None:
    item = b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"p":1}}'
    doc = b"[" + b",".join([item] * 100_000) + b"]"
    parsed = parse(doc)
    assert isinstance(parsed.message, list)
    assert len(parsed.message) == 100_000
