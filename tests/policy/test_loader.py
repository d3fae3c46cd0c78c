"""Strict loading: every rejection names file:line:column, the key, and a
suggestion where one is close."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agentwall.errors import PolicyError
from agentwall.policy import load_policy, loads_policy
from agentwall.policy.patterns import is_re2

BASE = """\
version: "2"
default_action: deny
tools:
  - name: read_file
    action: allow
    risk: low
    parameters:
      - name: path
        type: string
        pattern: "/workspace/.*"
"""


def _error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        loads_policy(textwrap.dedent(text), source_path="p.yaml")
    return info.value


def test_base_loads() -> None:
    p = loads_policy(BASE)
    assert [t.name for t in p.tools] == ["read_file"]


@pytest.mark.parametrize(
    ("text", "line", "column", "needle", "key", "suggestion"),
    [
        # unknown keys, at every level, with did-you-mean
        (
            BASE.replace("default_action", "default_acton"),
            2,
            1,
            "unknown key",
            "default_acton",
            "default_action",
        ),
        (BASE.replace("    risk: low", "    rsik: low"), 6, 5, "unknown key", "rsik", "risk"),
        (
            BASE.replace("        type: string", "        tpye: string"),
            9,
            9,
            "unknown key",
            "tpye",
            "type",
        ),
        (
            BASE + "session: {max_calls_per_sec: 5}\n",
            11,
            11,
            "unknown key",
            "max_calls_per_sec",
            "max_calls_per_second",
        ),
        # bad values
        (BASE.replace("action: allow", "action: alow"), 5, 13, "must be one of", None, "allow"),
        (BASE.replace("risk: low", "risk: extreme"), 6, 11, "must be one of", None, None),
        (BASE.replace("type: string", "type: str"), 9, 15, "must be one of", None, "string"),
        (
            BASE.replace("default_action: deny", "default_action: no"),
            2,
            17,
            "must be one of",
            None,
            None,
        ),
        (
            BASE.replace('version: "2"', 'version: "3"'),
            1,
            10,
            "unsupported policy version",
            "version",
            None,
        ),
        # missing required keys
        (
            BASE.replace("    action: allow\n", ""),
            4,
            5,
            "missing the required key 'action'",
            "action",
            None,
        ),
        (BASE.replace("default_action: deny\n", ""), 1, 1, "missing the required key", None, None),
        # wrong shapes
        (
            BASE.replace("    parameters:\n", "    parameters: 5\n").split("      - name: path")[0],
            7,
            17,
            "must be a list",
            None,
            None,
        ),
        (
            'version: "2"\ndefault_action: deny\ntools: {name: x}\n',
            3,
            8,
            "must be a list",
            None,
            None,
        ),
        # patterns RE2 cannot take, including ones pyre2 would silently run on re
        (
            BASE.replace('"/workspace/.*"', '"(a)\\\\1"'),
            10,
            18,
            "RE2 cannot compile",
            "pattern",
            None,
        ),
        (
            BASE.replace('"/workspace/.*"', '"(?=x)y"'),
            10,
            18,
            "RE2 cannot compile",
            "pattern",
            None,
        ),
        (BASE.replace('"/workspace/.*"', '"a)|(b"'), 10, 18, "RE2 cannot compile", "pattern", None),
        (BASE.replace('"/workspace/.*"', '"\\\\Qabc"'), 10, 18, "\\E", "pattern", None),
        # duplicates
        (BASE + "  - name: read_file\n    action: deny\n", 11, 5, "listed twice", "name", None),
        (
            BASE.replace("    risk: low\n", "    risk: low\n    risk: high\n"),
            7,
            5,
            "duplicate key",
            "risk",
            None,
        ),
        (BASE + "      - name: path\n", 11, 15, "declared twice", "name", None),
        # constraint combinations that cannot mean anything
        (
            BASE.replace("type: string", "type: integer"),
            10,
            9,
            "applies to strings",
            "pattern",
            None,
        ),
        (BASE + "        minimum: 3\n", 11, 9, "applies to numbers", "minimum", None),
        (
            BASE.replace("        type: string\n", "") + "        minimum: 3\n",
            10,
            9,
            "cannot be combined",
            "minimum",
            None,
        ),
        (BASE + "        within: [relative/dir]\n", 11, 18, "absolute paths", "within", None),
        (BASE + "        max_length: -1\n", 11, 21, "between 0", None, None),
        (BASE + "        enum: [1, 2]\n", 11, 16, "not of the parameter's type", "enum", None),
        # Safe Mode ids must exist
        (
            BASE + "safe_mode: {disable: [safe_mode.path.shh]}\n",
            11,
            23,
            "unknown Safe Mode rule",
            "disable",
            "safe_mode.path.ssh",
        ),
        (
            BASE + "safe_mode: {allow_private: ['10.0.0.0/33']}\n",
            11,
            29,
            "invalid allow_private",
            "allow_private",
            None,
        ),
        # methods: targeted methods belong to their own sections
        (
            BASE + "methods: {tools/call: allow}\n",
            11,
            11,
            "judged by the tools",
            "tools/call",
            None,
        ),
        # identity
        (
            BASE + "identity: {issuer: 'https://a', audience: b, algorithms: [HS256]}\n",
            11,
            59,
            "never allowed",
            "algorithms",
            None,
        ),
        (
            BASE + "identity: {issuer: 'https://a', audience: b, algorithms: [none]}\n",
            11,
            59,
            "never allowed",
            "algorithms",
            None,
        ),
        (
            BASE + "identity: {issuer: 'https://a', audience: b, algorithms: [RS265]}\n",
            11,
            59,
            "unknown algorithm",
            "algorithms",
            "RS256",
        ),
        (
            BASE + "identity: {issuer: auth.example.com, audience: b}\n",
            11,
            20,
            "http(s) URL",
            "issuer",
            None,
        ),
        (
            BASE + "identity: {audience: b}\n",
            11,
            11,
            "missing the required key 'issuer'",
            "issuer",
            None,
        ),
        # rate limits
        (
            BASE.replace(
                "    risk: low\n", "    risk: low\n    rate_limit: {calls_per_second: 0}\n"
            ),
            7,
            36,
            "greater than 0",
            None,
            None,
        ),
        (BASE + "session: {max_calls_per_second: fast}\n", 11, 33, "must be a number", None, None),
        # YAML features that change meaning at a distance
        (BASE + "limits: &l {max_depth: 3}\n", 11, 9, "anchors", None, None),
        ('version: "2"\ndefault_action: deny\nx: &a 1\n', 3, 4, "anchors", None, None),
        (
            BASE + "limits: {max_depth: 2020-01-01}\n",
            11,
            21,
            "unsupported YAML value type",
            None,
            None,
        ),
        (BASE + "limits: {max_depth: .inf}\n", 11, 21, "non-finite", None, None),
        (BASE + "1: x\n", 11, 1, "plain string", None, None),
        (BASE + "limits: {max_depth: 100000}\n", 11, 21, "between 1 and 512", None, None),
        # syntax errors carry positions too
        ('version: "2"\ndefault_action: [deny\n', 3, 1, "YAML syntax error", None, None),
        ("", 1, 1, "empty", None, None),
    ],
)
def test_rejections_have_positions(
    text: str, line: int, column: int, needle: str, key: str | None, suggestion: str | None
) -> None:
    err = _error(text)
    assert err.path == "p.yaml"
    assert (err.line, err.column) == (line, column), err.diagnostics()
    assert needle in err.diagnostics()
    if key is not None:
        assert err.key == key
    assert err.suggestion == suggestion
    assert err.diagnostics().startswith(f"p.yaml:{line}:{column}: ")
    assert err.exit_code == 2


def test_diagnostics_format() -> None:
    err = _error(BASE.replace("    risk: low", "    rsik: low"))
    assert err.diagnostics() == (
        "p.yaml:6:5: unknown key 'rsik' in a tool (key: rsik); did you mean 'risk'?"
    )


def test_load_from_file_and_errors_name_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    assert load_policy(good).source_path == str(good)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b'version: "2"\ndefault_action: deny\n\xff\n')
    with pytest.raises(PolicyError, match="not valid UTF-8"):
        load_policy(bad)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path)


def test_patterns_are_anchored_re2_objects() -> None:
    p = loads_policy(BASE)
    param = p._tools["read_file"].args.by_name["path"]  # type: ignore[union-attr]
    assert is_re2(param.pattern)
    assert param.pattern.pattern == "^(?:/workspace/.*)$"


def test_seed_example_loads() -> None:
    seed = """\
    version: "2"
    default_action: deny
    identity: {issuer: "https://auth.example.com", audience: "agentwall-proxy"}
    session: {max_calls_per_second: 10}
    tools:
      - name: read_file
        action: allow
        risk: low
        parameters:
          - name: path
            type: string
            pattern: "/workspace/[^\\\\x00]*"
            max_length: 4096
            required: true
          - name: options
            type: object
            schema: {type: object, properties: {limit: {type: integer, maximum: 100}},
                     required: [limit]}
    """
    p = loads_policy(textwrap.dedent(seed))
    assert p.session_rate == 10.0
    tool = p.tool("read_file")
    assert tool is not None
    assert tool.parameters is not None
    assert tool.parameters[1].schema == {
        "type": "object",
        "properties": {"limit": {"type": "integer", "maximum": 100}},
        "required": ["limit"],
        "additionalProperties": False,
        "$schema": "http://json-schema.org/draft-07/schema#",
    }


def test_warnings_are_returned_not_printed() -> None:
    p = loads_policy(
        BASE.replace("default_action: deny", "default_action: allow")
        + "safe_mode: {disable: [safe_mode.path.dotenv]}\n"
        + "methods: {tools/lsit: allow}\n"
    )
    text = "\n".join(p.warnings)
    assert "default_action is allow" in text
    assert "safe_mode.path.dotenv is disabled" in text
    assert "did you mean 'tools/list'" in text


def test_parameters_absent_versus_empty() -> None:
    open_tool = loads_policy(
        'version: "2"\ndefault_action: deny\ntools:\n  - {name: t, action: allow}\n'
    )
    closed_tool = loads_policy(
        'version: "2"\ndefault_action: deny\ntools:\n  - {name: t, action: allow, parameters: []}\n'
    )
    assert open_tool.tools[0].parameters is None
    assert closed_tool.tools[0].parameters == ()
    assert "accepts any arguments" in open_tool.warnings[0]
    assert open_tool.hash != closed_tool.hash


def test_version_may_be_a_number() -> None:
    assert loads_policy(BASE.replace('version: "2"', "version: 2")).hash == loads_policy(BASE).hash


def test_a_quiet_fallback_elsewhere_still_cannot_sneak_in_python_re() -> None:
    """Even if some other code switches pyre2 back to silent fallback, a
    pattern that would run on Python's re is refused by the type check."""
    import re2

    from agentwall.policy.patterns import PatternSyntaxError, compile_anchored

    re2.set_fallback_notification(re2.FALLBACK_QUIETLY)
    try:
        with pytest.raises(PatternSyntaxError, match="fallback"):
            compile_anchored("(a)\\1")
        with pytest.raises(PolicyError, match="RE2 cannot compile"):
            loads_policy(BASE.replace('"/workspace/.*"', '"(?<=x)y"'))
    finally:
        re2.set_fallback_notification(re2.FALLBACK_EXCEPTION)
