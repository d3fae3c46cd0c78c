"""Mcp-Param-* headers against tool arguments (MCP 2026-07-28, SEP-2243), as
pure transcripts: (tool schema, headers, arguments) -> accept or -32020."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentwall.core import mcp_http as mh
from agentwall.errors import HEADER_MISMATCH


def schema(**props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props}


def prop(kind: str, header: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, **extra}
    if header is not None:
        out[mh.X_MCP_HEADER] = header
    return out


def hdrs(**pairs: str) -> list[tuple[bytes, bytes]]:
    """Headers as the request parser gives them: lower-cased names."""
    return [
        (("mcp-param-" + k.replace("_", "-")).lower().encode(), v.encode("latin-1"))
        for k, v in pairs.items()
    ]


def refusal(reply: mh.HttpReply | None) -> str:
    assert reply is not None, "expected a -32020 refusal"
    assert reply.status == 400
    body = orjson.loads(reply.body)
    assert body["error"]["code"] == HEADER_MISMATCH
    message = body["error"]["message"]
    assert isinstance(message, str)
    return message


REGION = mh.param_header_bindings(
    schema(
        region=prop("string", "Region"),
        query=prop("string"),
        limit=prop("integer", "Limit"),
        dry=prop("boolean", "Dry-Run"),
    )
)


# -- reading the schema ------------------------------------------------------


def test_bindings_from_the_spec_example() -> None:
    tool = mh.param_header_bindings(
        schema(region=prop("string", "Region", description="x"), query=prop("string"))
    )
    assert tool.invalid is None
    assert tool.bindings == (
        mh.ParamBinding("Mcp-Param-Region", b"mcp-param-region", ("region",), "string"),
    )


def test_nested_properties_chain_is_reachable() -> None:
    tool = mh.param_header_bindings(
        schema(config=prop("object", properties={"tenant": prop("string", "Tenant")}))
    )
    assert tool.invalid is None
    assert [(b.path, b.key) for b in tool.bindings] == [(("config", "tenant"), b"mcp-param-tenant")]


@pytest.mark.parametrize(
    ("bad_schema", "why"),
    [
        (schema(a=prop("number", "A")), "string, integer and boolean"),
        (schema(a=prop("object", "A")), "string, integer and boolean"),
        (schema(a={"x-mcp-header": "A"}), "string, integer and boolean"),
        (schema(a=prop(["string", "null"], "A")), "string, integer and boolean"),  # type: ignore[arg-type]
        (schema(a=prop("string", "")), "not an HTTP token"),
        (schema(a=prop("string", "Has Space")), "not an HTTP token"),
        (schema(a=prop("string", "Colon:")), "not an HTTP token"),
        (schema(a=prop("string", "Ré")), "not an HTTP token"),
        (schema(a=prop("string", "Cr\r\nX")), "not an HTTP token"),
        (schema(a=prop("string", 7)), "must be a string"),  # type: ignore[arg-type]
        (schema(a=prop("string", "Dup"), b=prop("string", "dUP")), "repeats"),
        (schema(a=prop("array", items=prop("string", "A"))), "outside a chain"),
        (schema(a={"anyOf": [prop("string", "A")]}), "outside a chain"),
        ({"allOf": [schema(a=prop("string", "A"))]}, "outside a chain"),
        ({"$defs": {"x": prop("string", "A")}, "properties": {}}, "outside a chain"),
        (schema(a={"if": prop("string", "A")}), "outside a chain"),
        (schema(a=prop("object", additionalProperties=prop("string", "A"))), "outside a chain"),
        ({"type": "object", "x-mcp-header": "Root"}, "schema root"),
    ],
)
def test_invalid_annotations_are_remembered_not_enforced(bad_schema: Any, why: str) -> None:
    tool = mh.param_header_bindings(bad_schema)
    assert tool.bindings == ()
    assert tool.invalid is not None
    assert why in tool.invalid
    # Not enforced: a call with anything passes this check.
    assert mh.check_param_headers_against(tool, hdrs(A="x"), {"a": "y"}) is None


def test_ref_is_not_followed_and_data_keywords_are_not_schemas() -> None:
    tool = mh.param_header_bindings(
        schema(
            a={"$ref": "#/$defs/nothing"},
            b=prop("string", default={"x-mcp-header": "NotAnAnnotation"}),
            c=prop("string", enum=[{"x-mcp-header": "Nor"}]),
        )
    )
    assert tool == mh.NO_PARAM_HEADERS


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=40,
    )
)
def test_any_json_schema_is_read_without_error(value: Any) -> None:
    tool = mh.param_header_bindings(value)
    assert len(tool.bindings) <= mh.MAX_BINDINGS_PER_TOOL


def test_deep_schema_does_not_recurse() -> None:
    def nest(levels: int) -> dict[str, Any]:
        node: dict[str, Any] = prop("string", "Deep")
        for _ in range(levels):
            node = {"type": "object", "properties": {"n": node}}
        return node

    tool = mh.param_header_bindings(nest(mh.MAX_PARAM_PATH))
    assert tool.invalid is None
    assert len(tool.bindings[0].path) == mh.MAX_PARAM_PATH
    assert mh.param_header_bindings(nest(mh.MAX_PARAM_PATH + 1)).invalid is not None
    deep = mh.param_header_bindings(nest(5000))
    assert deep.invalid is not None
    assert "deeper" in deep.invalid
    # Node count is bounded too (a hostile upstream's huge schema).
    wide = {"type": "object", "properties": {f"p{i}": {} for i in range(30_000)}}
    assert mh.param_header_bindings(wide).invalid is not None


def test_too_many_annotations_are_not_remembered() -> None:
    many = {f"p{i}": prop("string", f"H{i}") for i in range(mh.MAX_BINDINGS_PER_TOOL + 1)}
    assert mh.param_header_bindings(schema(**many)).invalid is not None


def test_tools_list_result_maps_every_tool() -> None:
    result = {
        "tools": [
            {"name": "sql", "inputSchema": schema(region=prop("string", "Region"))},
            {"name": "plain", "inputSchema": schema(q=prop("string"))},
            {"name": 7},
            "junk",
        ]
    }
    table = mh.tools_param_headers(result)
    assert set(table) == {"sql", "plain"}
    assert table["plain"] == mh.NO_PARAM_HEADERS
    assert mh.tools_param_headers({"tools": "x"}) == {}
    assert mh.tools_param_headers(None) == {}


# -- the check ---------------------------------------------------------------


def test_matching_headers_pass_and_names_are_case_insensitive() -> None:
    args = {"region": "us-west1", "query": "q", "limit": 5, "dry": True}
    headers = hdrs(Region="us-west1", Limit="5", Dry_Run="true")
    assert mh.check_param_headers_against(REGION, headers, args) is None
    # The parser lower-cases names; a binding declared "Dry-Run" matches.
    assert all(k == k.lower() for k, _ in headers)


def test_lying_header_is_refused_naming_header_and_argument() -> None:
    reply = mh.check_param_headers_against(
        REGION, hdrs(Region="eu-west1"), {"region": "us-west1"}, rpc_id=9
    )
    message = refusal(reply)
    assert "Mcp-Param-Region" in message
    assert "'region'" in message
    assert reply is not None
    assert orjson.loads(reply.body)["id"] == 9


def test_missing_header_with_value_in_body_is_refused() -> None:
    message = refusal(mh.check_param_headers_against(REGION, [], {"region": "us-west1"}))
    assert "missing" in message
    assert "Mcp-Param-Region" in message


@pytest.mark.parametrize("args", [{}, {"region": None}, {"query": "q"}])
def test_absent_or_null_argument_expects_no_header(args: dict[str, Any]) -> None:
    assert mh.check_param_headers_against(REGION, [], args) is None
    message = refusal(mh.check_param_headers_against(REGION, hdrs(Region="us"), args))
    assert "present" in message


def test_header_for_an_object_argument_is_refused() -> None:
    assert mh.check_param_headers_against(REGION, [], {"region": {"a": 1}}) is None
    refusal(mh.check_param_headers_against(REGION, hdrs(Region="x"), {"region": {"a": 1}}))


def test_nested_argument_and_non_object_step() -> None:
    tool = mh.param_header_bindings(
        schema(config=prop("object", properties={"tenant": prop("string", "Tenant")}))
    )
    ok = {"config": {"tenant": "acme"}}
    assert mh.check_param_headers_against(tool, hdrs(Tenant="acme"), ok) is None
    refusal(mh.check_param_headers_against(tool, hdrs(Tenant="evil"), ok))
    refusal(mh.check_param_headers_against(tool, [], ok))
    # config is not an object: no value at the path, so no header expected.
    assert mh.check_param_headers_against(tool, [], {"config": "flat"}) is None


def test_duplicated_declared_header_is_refused() -> None:
    headers = hdrs(Region="us") + hdrs(Region="us")
    assert "more than once" in refusal(
        mh.check_param_headers_against(REGION, headers, {"region": "us"})
    )


def test_undeclared_param_headers_are_left_alone() -> None:
    assert mh.check_param_headers_against(REGION, hdrs(Other="x"), {}) is None
    assert mh.check_param_headers_against(mh.NO_PARAM_HEADERS, hdrs(Region="x"), {}) is None


def test_base64_sentinel_is_decoded_and_invalid_base64_refused() -> None:
    args = {"region": "Hello, 世界"}
    ok = hdrs(Region="=?base64?SGVsbG8sIOS4lueVjA==?=")
    assert mh.check_param_headers_against(REGION, ok, args) is None
    for bad in ("=?base64?%%?=", "=?base64?/w==?=", "=?base64?SGk?=", "=?base64?SGl=?="):
        message = refusal(
            mh.check_param_headers_against(REGION, hdrs(Region=bad), {"region": "Hi"})
        )
        assert "not valid" in message
    # The raw sentinel text itself is not what the body says.
    refusal(
        mh.check_param_headers_against(
            REGION, hdrs(Region="=?base64?SGk=?="), {"region": "=?base64?SGk=?="}
        )
    )


@pytest.mark.parametrize(
    ("header", "value", "agrees"),
    [
        ("42", 42, True),
        ("42.0", 42, True),
        ("42.000", 42, True),
        ("-7", -7, True),
        ("042", 42, True),
        ("42", 42.0, True),
        ("42.5", 42, False),
        ("4.2e1", 42, False),
        ("+42", 42, False),
        ("43", 42, False),
        ("", 42, False),
        ("9007199254740993", 9007199254740992, False),  # no float round trip
        ("1" * 5000, 1, False),
        ("true", 1, False),
    ],
)
def test_integers_compare_numerically(header: str, value: Any, agrees: bool) -> None:
    reply = mh.check_param_headers_against(REGION, hdrs(Limit=header), {"limit": value})
    assert (reply is None) is agrees


@pytest.mark.parametrize(
    ("header", "value", "agrees"),
    [
        ("true", True, True),
        ("false", False, True),
        ("True", True, False),
        ("1", True, False),
        ("false", True, False),
        ("true", "true", True),  # a string body value compares as its text
    ],
)
def test_booleans_are_true_or_false(header: str, value: Any, agrees: bool) -> None:
    reply = mh.check_param_headers_against(REGION, hdrs(Dry_Run=header), {"dry": value})
    assert (reply is None) is agrees


# -- round trips: what a conforming client sends always matches ---------------

KIND_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(),
    "integer": st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    "boolean": st.booleans(),
}


def client_header(value: Any) -> str:
    """The spec's Value Encoding, written from its text (not from our
    encoder): type conversion, then the sentinel when not plain ASCII."""
    text = _text(value)
    plain = all(0x20 <= ord(c) <= 0x7E for c in text) and text == text.strip(" \t")
    if plain and not (text.startswith("=?base64?") and text.endswith("?=")):
        return text
    return "=?base64?" + base64.b64encode(text.encode()).decode() + "?="


@given(data=st.data(), kind=st.sampled_from(sorted(KIND_VALUES)))
def test_conforming_encoding_matches_and_other_values_do_not(
    data: st.DataObject, kind: str
) -> None:
    tool = mh.param_header_bindings(schema(v=prop(kind, "V")))
    value = data.draw(KIND_VALUES[kind])
    header = client_header(value)
    assert header == mh.encode_header_value(_text(value))
    # As it crosses HTTP: the request parser strips surrounding whitespace,
    # which the encoding never leaves there.
    assert header == header.strip(" \t")
    headers = [(b"mcp-param-v", header.encode("ascii"))]
    assert mh.check_param_headers_against(tool, headers, {"v": value}) is None
    other = data.draw(KIND_VALUES[kind].filter(lambda o: o != value))
    refusal(mh.check_param_headers_against(tool, headers, {"v": other}))
    # Same header, no argument: refused; argument, no header: refused.
    refusal(mh.check_param_headers_against(tool, headers, {}))
    refusal(mh.check_param_headers_against(tool, [], {"v": value}))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@given(st.binary(max_size=64), st.text(max_size=20))
def test_arbitrary_header_bytes_never_crash(raw: bytes, value: str) -> None:
    reply = mh.check_param_headers_against(REGION, [(b"mcp-param-region", raw)], {"region": value})
    if reply is None:
        assert mh.decode_header_value(raw.decode("ascii")) == value


# -- after a redaction the mirrors follow the body ----------------------------


def test_rebuilt_headers_mirror_the_redacted_arguments() -> None:
    headers = [(b"x-trace", b"t"), (b"mcp-param-other", b"o"), *hdrs(Region="s3cr3t", Limit="5")]
    redacted = {"region": "[REDACTED]", "limit": 5}
    out = mh.rebuild_param_headers(REGION, headers, redacted)
    assert b"s3cr3t" not in b"".join(v for _, v in out)
    assert (b"mcp-param-region", b"[REDACTED]") in out
    assert (b"mcp-param-limit", b"5") in out
    assert (b"x-trace", b"t") in out
    assert (b"mcp-param-other", b"o") in out
    # What is forwarded passes the same check the upstream makes.
    assert mh.check_param_headers_against(REGION, out, redacted) is None


def test_rebuilt_headers_without_declarations_drop_every_mirror() -> None:
    headers = [(b"x-trace", b"t"), *hdrs(Region="s3cr3t", Other="o")]
    assert mh.rebuild_param_headers(None, headers, {"region": "[REDACTED]"}) == [(b"x-trace", b"t")]


@given(
    st.dictionaries(
        st.sampled_from(["region", "limit", "dry", "query"]),
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    )
)
def test_rebuilt_headers_always_pass_the_check(arguments: dict[str, Any]) -> None:
    out = mh.rebuild_param_headers(REGION, hdrs(Region="stale", Limit="0"), arguments)
    assert mh.check_param_headers_against(REGION, out, arguments) is None
