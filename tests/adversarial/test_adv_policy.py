"""Red team: the policy evaluator's own checks (``within``, types, enums,
names, schemas, resources, prompts), attacked through the real ``evaluate``
with a loaded policy."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentwall.core.canonical import canonical_json
from agentwall.policy import evaluate, loads_policy
from agentwall.types import Call

POLICY = loads_policy(
    """\
version: "2"
default_action: deny
tools:
  - name: read_file
    action: allow
    parameters:
      - {name: path, type: string, within: ["/workspace"], required: true}
      - name: paths
        type: array
        items: {type: string, within: ["/workspace"]}
  - name: count
    action: allow
    parameters:
      - {name: n, type: integer, maximum: 10}
      - {name: flag, enum: [true, "x"]}
      - {name: label, type: string, max_length: 4}
      - name: opts
        type: object
        schema: {type: object, properties: {limit: {type: integer, maximum: 100}}}
  - {name: delete_file, action: deny}
resources:
  - {uri: "file:///workspace/.*", action: allow, within: ["/workspace"]}
prompts:
  - name: summarize
    action: allow
    arguments:
      - {name: text, type: string, max_length: 5}
""",
    source_path="redteam.yaml",
)


def _call(method: str, params: dict[str, Any]) -> Call:
    target = params.get("name") or params.get("uri") or ""
    return Call(
        call_id="rt", session="rt", transport="stdio", origin="client", kind="request",
        rpc_id=1, method=method, target=target, params=params,
        params_json=canonical_json(params), identity=None,
    )  # fmt: skip


def tool(name: str, args: dict[str, Any]) -> tuple[str, str | None]:
    d = evaluate(POLICY, _call("tools/call", {"name": name, "arguments": args}), 0)
    return d.verdict, d.rule_id


WITHIN = "tools[read_file].parameters[path].within"

# Found: these passed ``within: ["/workspace"]`` before the fix.  A server
# that percent-decodes twice (a proxy and then the app, or a double unquote)
# reads %252e as "."; IIS reads %u002e as "."; lenient UTF-8 decoders read the
# overlong %c0%ae as "."; Windows "best fit" turns the division slash into "/".
WITHIN_FOUND = [
    "/workspace/%252e%252e/etc/passwd",
    "/workspace/%25252e%25252e/etc/passwd",
    "/workspace/..%252fetc/passwd",
    "/workspace/%2525%32%65%2525%32%65/etc/passwd",
    "/workspace/%c0%ae%c0%ae/etc/passwd",
    "/workspace/%e0%80%ae%e0%80%ae/etc/passwd",
    "/workspace/%u002e%u002e/etc/passwd",
    "/workspace/a∕..∕..∕etc",
    "/workspace/a⁄..⁄..⁄etc",
    "/workspace/..¥..¥windows",
]
WITHIN_HELD = [
    "/workspace/../etc/passwd",
    "/workspace/%2e%2e/etc/passwd",
    "/workspace/%2E%2E/etc/passwd",
    "/workspace/..%2fetc",
    "/workspace\\..\\etc\\passwd",
    "/workspace/．．/etc/passwd",
    "/workspace/‥/etc/passwd",
    "/workspace/a／..／..／etc",
    "/workspace-evil/x",
    "/WORKSPACE/a",
    "/workspace/a/../../etc",
    "~/workspace",
    "$HOME/x",
    "relative/path",
    "/workspace/a\x00",
    "",
]
WITHIN_ALLOWED = [
    "/workspace/a",
    "/workspace",
    "/workspace/",
    "//workspace/a",
    "/./workspace/a",
    "/workspace/...",
    "/workspace/..../x",
    "/workspace/a/./b/../c",
    "/workspace/100%done",
    "/workspace/caf%e9.txt",
    "/workspace/ｘ",
]


@pytest.mark.parametrize("path", WITHIN_FOUND + WITHIN_HELD)
def test_within_refuses_escapes(path: str) -> None:
    assert tool("read_file", {"path": path}) == ("deny", WITHIN), ascii(path)


@pytest.mark.parametrize("path", WITHIN_ALLOWED)
def test_within_allows_paths_inside(path: str) -> None:
    assert tool("read_file", {"path": path}) == ("allow", "tools[read_file]"), ascii(path)


def test_within_on_array_items_points_at_the_item() -> None:
    d = evaluate(
        POLICY,
        _call("tools/call", {"name": "read_file", "arguments": {
            "path": "/workspace/a", "paths": ["/workspace/b", "/workspace/%252e%252e/x"]}}),
        0,
    )  # fmt: skip
    assert (d.verdict, d.pointer) == ("deny", "/arguments/paths/1")


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["..", ".", "a", "%2e", "%252e", "%25", "/", "\\", "．", "∕", "%c0%ae", "workspace"]
        ),
        max_size=8,
    )
)
def test_within_never_allows_what_a_decoding_server_resolves_outside(parts: list[str]) -> None:
    """Whatever the spelling, an allowed path stays inside /workspace for a
    server that percent-decodes up to three times and folds compatibility
    characters (the union of what servers do)."""
    import unicodedata
    from urllib.parse import unquote

    from agentwall.policy.paths import normalise_path

    path = "/workspace/" + "/".join(parts)
    if tool("read_file", {"path": path})[0] != "allow":
        return
    for decoded in _decodings(path, unquote):
        for form in (decoded, unicodedata.normalize("NFKC", decoded).replace("∕", "/")):
            norm = normalise_path(form)
            assert norm is not None
            assert norm == "/workspace" or norm.startswith("/workspace/"), (path, form)


def _decodings(path: str, unquote: Any) -> list[str]:
    out = [path]
    for _ in range(3):
        out.append(unquote(out[-1], errors="replace"))
    return out


# --- the resource within: a clean deny, not an internal error ---------------------------


def test_resource_within_with_invalid_utf8_escape_is_a_clean_deny() -> None:
    """Found: an overlong escape in a file:// URI raised inside the evaluator
    (UnicodeDecodeError), so the decision was ``internal.error``; fail-closed,
    but the audit and the agent got no reason."""
    d = evaluate(
        POLICY, _call("resources/read", {"uri": "file:///workspace/%c0%ae%c0%ae/etc/passwd"}), 0
    )
    assert (d.verdict, d.rule_id) == ("deny", "resources[0].within")


@pytest.mark.parametrize(
    "uri",
    [
        "file:///workspace/../etc/passwd",
        "file:///workspace/%2e%2e/etc/passwd",
        "file:///workspace/%252e%252e/etc/passwd",
        "file:///workspace/a?x=../../etc",
        "file:///workspace/a#../../etc",
        "file:///workspace/..%2fetc",
        "file:///workspace/%00/../../etc",
        "file:///workspace//../etc",
    ],
)
def test_resource_within_escapes(uri: str) -> None:
    d = evaluate(POLICY, _call("resources/read", {"uri": uri}), 0)
    assert (d.verdict, d.rule_id) == ("deny", "resources[0].within"), uri


# --- names, types, enums, lengths, schemas: what held -----------------------------------

HELD_DENIALS: list[tuple[str, dict[str, Any]]] = [
    ("Read_file", {"path": "/workspace/a"}),
    ("read_file ", {"path": "/workspace/a"}),
    ("rеad_file", {"path": "/workspace/a"}),  # Cyrillic е
    ("read\u200bfile", {"path": "/workspace/a"}),
    ("ｒｅａｄ_file", {"path": "/workspace/a"}),
    ("read_file\n", {"path": "/workspace/a"}),
    ("read_fi\u006ce\u0301", {"path": "/workspace/a"}),  # NFD tail
    ("delete_file", {}),
    ("count", {"n": True}),
    ("count", {"n": 10.0}),
    ("count", {"n": 1e1}),
    ("count", {"n": "1"}),
    ("count", {"n": 11}),
    ("count", {"n": 10**40}),
    ("count", {"n": None}),
    ("count", {"n": [1]}),
    ("count", {"flag": 1}),
    ("count", {"flag": False}),
    ("count", {"flag": "X"}),
    ("count", {"label": "abcde"}),
    ("count", {"opts": {"limit": 101}}),
    ("count", {"opts": {"limit": True}}),
    ("count", {"opts": {"limit": 1, "extra": 1}}),
    ("count", {"undeclared": 1}),
    ("read_file", {}),
]


@pytest.mark.parametrize(("name", "args"), HELD_DENIALS, ids=lambda v: ascii(v)[:40])
def test_held_denials(name: str, args: dict[str, Any]) -> None:
    assert tool(name, args)[0] == "deny"


def test_max_length_counts_code_points_not_utf16_units_or_bytes() -> None:
    """Documented: lengths are code points.  Four astral characters are 4
    (8 UTF-16 units, 16 bytes), so they pass max_length 4; a JS server that
    counts UTF-16 units would see 8.  Recorded here so a change is a choice."""
    assert tool("count", {"label": "𝒜𝒜𝒜𝒜"}) == ("allow", "tools[count]")
    assert tool("count", {"label": "𝒜𝒜𝒜𝒜𝒜"})[0] == "deny"
    # A combining sequence is several code points.
    assert tool("count", {"label": "e\u0301e\u0301e"})[0] == "deny"


def test_schema_integer_follows_json_schema_not_the_parameter_rule() -> None:
    """Recorded behaviour: inside a nested ``schema``, JSON Schema says 100.0
    is an integer, while a parameter's own ``type: integer`` refuses 1.0.
    The bound still holds (101.0 is refused)."""
    assert tool("count", {"opts": {"limit": 100.0}})[0] == "allow"
    assert tool("count", {"opts": {"limit": 101.0}})[0] == "deny"
    assert tool("count", {"n": 10.0})[0] == "deny"


def test_prompt_arguments_are_checked() -> None:
    def prompt(args: Any) -> str:
        params = {"name": "summarize", "arguments": args}
        return evaluate(POLICY, _call("prompts/get", params), 0).verdict

    assert prompt({"text": "abcde"}) == "allow"
    assert prompt({"text": "abcdef"}) == "deny"
    assert prompt({"other": "x"}) == "deny"
    assert prompt({"text": ["a"]}) == "deny"
    assert prompt([1]) == "deny"
