"""Nested JSON Schema: compiled once, closed by default, RE2 only, no fetching,
no writing into data."""

from __future__ import annotations

import copy
import textwrap
from typing import Any

import pytest

from agentwall.errors import PolicyError
from agentwall.policy import Policy, loads_policy
from agentwall.policy.patterns import is_re2

from .helpers import decide, tool_call


def _policy(schema_yaml: str) -> Policy:
    text = textwrap.dedent("""\
        version: "2"
        default_action: deny
        tools:
          - name: t
            action: allow
            parameters:
              - name: o
                schema:
        """) + textwrap.indent(textwrap.dedent(schema_yaml), " " * 10)
    return loads_policy(text, source_path="s.yaml")


def _verdict(policy: Policy, value: Any) -> str:
    return decide(policy, tool_call("t", {"o": value})).verdict


def test_additional_properties_false_is_injected_at_every_level() -> None:
    p = _policy("""\
        type: object
        properties:
          a: {type: string}
          nested:
            type: object
            properties: {b: {type: integer}}
          list:
            type: array
            items: {properties: {c: {type: string}}}
        """)
    assert _verdict(p, {"a": "x", "nested": {"b": 1}, "list": [{"c": "y"}]}) == "allow"
    assert _verdict(p, {"a": "x", "zzz": 1}) == "deny"
    assert _verdict(p, {"nested": {"b": 1, "zzz": 1}}) == "deny"
    assert _verdict(p, {"list": [{"c": "y", "zzz": 1}]}) == "deny"
    tool = p.tool("t")
    assert tool is not None
    assert tool.parameters is not None
    effective = tool.parameters[0].schema
    assert effective is not None
    assert effective["additionalProperties"] is False
    assert effective["properties"]["nested"]["additionalProperties"] is False


def test_naming_additional_properties_opts_out() -> None:
    p = _policy("""\
        type: object
        properties: {a: {type: string}}
        additionalProperties: true
        """)
    assert _verdict(p, {"a": "x", "anything": [1]}) == "allow"
    p = _policy("""\
        type: object
        additionalProperties: {type: integer}
        """)
    assert _verdict(p, {"x": 1}) == "allow"
    assert _verdict(p, {"x": "1"}) == "deny"


def test_pattern_is_anchored_and_runs_on_re2() -> None:
    p = _policy("""\
        type: object
        properties: {q: {type: string, pattern: "SELECT .*"}}
        patternProperties: {"x-[a-z]+": {type: integer}}
        """)
    assert _verdict(p, {"q": "SELECT 1"}) == "allow"
    assert _verdict(p, {"q": "-- x\nSELECT 1"}) == "deny"
    assert _verdict(p, {"q": "SELECT 1\nDROP"}) == "deny"
    assert _verdict(p, {"x-abc": 1}) == "allow"
    assert _verdict(p, {"y-x-abc": 1}) == "deny"
    compiled = p._tools["t"].args.by_name["o"].schema  # type: ignore[union-attr]
    assert compiled is not None
    table = compiled.validate.func.__globals__["REGEX_PATTERNS"]
    assert table
    assert all(is_re2(rx) for rx in table.values())


def test_formats_run_on_re2() -> None:
    p = _policy("""\
        type: object
        properties: {mail: {type: string, format: email}, day: {type: string, format: date}}
        """)
    assert _verdict(p, {"mail": "a@b.example", "day": "2024-02-29"}) == "allow"
    assert _verdict(p, {"mail": "not-an-email"}) == "deny"
    assert _verdict(p, {"day": "2023-02-29"}) == "deny"
    compiled = p._tools["t"].args.by_name["o"].schema  # type: ignore[union-attr]
    assert compiled is not None
    assert all(is_re2(rx) for rx in compiled.validate.func.__globals__["REGEX_PATTERNS"].values())


def test_defaults_are_never_written_into_the_call() -> None:
    p = _policy("""\
        type: object
        properties: {a: {type: string, default: injected}}
        """)
    value: dict[str, Any] = {}
    args = {"o": value}
    before = copy.deepcopy(args)
    assert decide(p, tool_call("t", args)).verdict == "allow"
    assert args == before


def test_integer_and_enum_semantics_inside_schemas() -> None:
    p = _policy("""\
        type: object
        properties: {n: {type: integer}, e: {enum: [1]}}
        """)
    assert _verdict(p, {"n": 1}) == "allow"
    assert _verdict(p, {"n": True}) == "deny"
    assert _verdict(p, {"n": 1.5}) == "deny"
    assert _verdict(p, {"e": True}) == "deny"


@pytest.mark.parametrize(
    ("schema", "needle", "line"),
    [
        ("type: object\nmaximun: 3\n", "did you mean 'maximum'", 10),
        ("type: object\nunevaluatedProperties: false\n", "unsupported JSON Schema keyword", 10),
        ("$ref: 'https://evil.example/schema.json'\n", "must point inside", 9),
        ("$id: 'https://evil.example/'\n", "$id", 9),
        ("type: string\npattern: '(a)\\1'\n", "RE2 cannot compile", 10),
        ("type: object\npatternProperties: {'(?=x)': {}}\n", "RE2 cannot compile", 10),
        ("type: string\nformat: regex\n", "not supported", 10),
        ("type: string\nformat: emial\n", "did you mean 'email'", 10),
        ("type: strng\n", "unknown type", 9),
        ("allOf: []\n", "non-empty list", 9),
        ("$schema: 'https://json-schema.org/draft/2020-12/schema'\n", "draft-07", 9),
        ("type: integer\nminimum: x\n", "invalid JSON Schema", 9),
        ("[1, 2]\n", "must be a mapping", 9),
    ],
)
def test_bad_schemas_are_load_errors_with_positions(schema: str, needle: str, line: int) -> None:
    with pytest.raises(PolicyError) as info:
        _policy(schema)
    assert needle in info.value.diagnostics()
    assert info.value.line == line
    assert info.value.path == "s.yaml"


def test_local_refs_work() -> None:
    p = _policy("""\
        type: object
        definitions:
          name: {type: string, maxLength: 3}
        properties: {a: {$ref: "#/definitions/name"}}
        """)
    assert _verdict(p, {"a": "abc"}) == "allow"
    assert _verdict(p, {"a": "abcd"}) == "deny"


def test_schema_pointer_goes_to_the_failing_member() -> None:
    p = _policy("""\
        type: object
        properties:
          list: {type: array, items: {type: object, properties: {n: {type: integer}}}}
        """)
    d = decide(p, tool_call("t", {"o": {"list": [{"n": 1}, {"n": "x"}]}}))
    assert d.verdict == "deny"
    assert d.pointer == "/arguments/o/list/1/n"
    assert d.rule_id == "tools[t].parameters[o].schema"
