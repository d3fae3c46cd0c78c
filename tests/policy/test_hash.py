"""The content hash's stability rule: fields equal to their default are left
out of the canonical form, so adding an optional key keeps every existing
hash (and promote signature, and decision-cache key), while any change of
meaning changes it."""

from __future__ import annotations

import textwrap

import msgspec
import pytest

from agentwall.core.canonical import canonical_json, sha256_hex
from agentwall.policy import loads_policy
from agentwall.policy.compiled import canonical_form, policy_hash
from agentwall.policy.model import PolicyModel, ToolRule

BASE = textwrap.dedent("""\
    version: "2"
    default_action: deny
    tools:
      - name: read_file
        action: allow
        parameters:
          - {name: path, type: string, within: ["/workspace"]}
    """)


def test_canonical_form_is_exactly_the_non_default_fields() -> None:
    # Pinned on purpose: if this changes, every signature made by `promote`
    # stops verifying.  Change it only together with POLICY_FORMAT.
    form = canonical_json(canonical_form(loads_policy(BASE).model))
    assert form == (
        b'{"format":"agentwall-policy/2","policy":{"default_action":"deny","tools":'
        b'[{"action":"allow","name":"read_file","parameters":[{"name":"path",'
        b'"type":"string","within":["/workspace"]}]}],"version":"2"}}'
    )
    assert loads_policy(BASE).hash == sha256_hex(form)


class _ToolRuleWithNewKey(ToolRule, frozen=True):
    future_option: str | None = None
    future_list: tuple[str, ...] = ()


class _ModelWithNewKey(PolicyModel, frozen=True):
    future_section: dict[str, int] = msgspec.field(default_factory=dict)
    future_flag: bool = False


def _as(cls: type, struct: msgspec.Struct, **changes: object) -> msgspec.Struct:
    fields = {name: getattr(struct, name) for name in struct.__struct_fields__}
    fields.update(changes)
    return cls(**fields)  # type: ignore[no-any-return]


def test_a_new_optional_key_with_its_default_keeps_the_hash() -> None:
    model = loads_policy(BASE).model
    tools = tuple(_as(_ToolRuleWithNewKey, t) for t in model.tools)
    future = _as(_ModelWithNewKey, model, tools=tools)
    assert isinstance(future, PolicyModel)
    assert policy_hash(future) == policy_hash(model)
    # ... and setting the new key is a change of meaning.
    assert policy_hash(_as(_ModelWithNewKey, model, future_flag=True)) != policy_hash(model)
    assert policy_hash(_as(_ModelWithNewKey, model, future_section={"a": 1})) != policy_hash(model)
    changed_tool = (_as(_ToolRuleWithNewKey, model.tools[0], future_option="x"),)
    assert policy_hash(_as(_ModelWithNewKey, model, tools=changed_tool)) != policy_hash(model)


IDENT = "identity: {issuer: 'https://a.example', audience: b}\ntools:\n"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("    action: allow\n", "    action: allow\n    additional_parameters: deny\n"),
        ("within:", "required: false, within:"),
        ("tools:\n", "limits: {max_depth: 64, max_bytes: 1048576}\ntools:\n"),
        ("tools:\n", "session: {}\ntools:\n"),
        ("tools:\n", "methods: {}\ntools:\n"),
        ('version: "2"', "version: 2"),
        (IDENT, IDENT.replace("b}", "[b]}")),
        (IDENT, IDENT.replace("b}", "b, clock_skew_seconds: 60}")),
        (IDENT, IDENT.replace("b}", "b, algorithms: [RS256, ES256, EdDSA]}")),
        (IDENT, IDENT.replace("b}", "b, scope_implies: {}}")),
    ],
)
def test_spelling_out_a_default_keeps_the_hash(old: str, new: str) -> None:
    base = BASE.replace("tools:\n", IDENT) if old == IDENT else BASE
    assert old in base
    assert loads_policy(base.replace(old, new, 1)).hash == loads_policy(base).hash


MEANINGS = [
    BASE,
    BASE.replace("default_action: deny", "default_action: allow"),
    BASE.replace("    action: allow\n", "    action: allow\n    additional_parameters: allow\n"),
    BASE.replace("    action: allow\n", "    action: deny\n"),
    BASE.replace("within:", "required: true, within:"),
    BASE.replace('"/workspace"', '"/workspace2"'),
    BASE.replace("type: string, ", ""),
    BASE.replace("tools:\n", "limits: {max_depth: 63}\ntools:\n"),
    BASE.replace("tools:\n", "limits: {max_string_length: 10}\ntools:\n"),
    BASE.replace("tools:\n", "safe_mode: {disable: [safe_mode.ssrf.private_network]}\ntools:\n"),
    BASE.replace("tools:\n", "methods: {ping: deny}\ntools:\n"),
    BASE.replace("tools:\n", "description: x\ntools:\n"),
    BASE.replace("tools:\n", "identity: {issuer: 'https://a.example', audience: b}\ntools:\n"),
    BASE.replace(
        "tools:\n",
        "identity: {issuer: 'https://a.example', audience: b, clock_skew_seconds: 0}\ntools:\n",
    ),
    BASE.replace(
        "tools:\n",
        "identity: {issuer: 'https://a.example', audience: b, algorithms: [RS256]}\ntools:\n",
    ),
    BASE.replace("tools:\n", "identity: {issuer: 'https://a.example', audience: [b, c]}\ntools:\n"),
    # No parameters (any arguments) and an empty list (no arguments) differ.
    BASE.replace(
        '    parameters:\n      - {name: path, type: string, within: ["/workspace"]}\n', ""
    ),
    BASE.replace(
        '    parameters:\n      - {name: path, type: string, within: ["/workspace"]}\n',
        "    parameters: []\n",
    ),
    # A true that is not a 1, a 1 that is not a 1.5.
    BASE.replace('type: string, within: ["/workspace"]', "enum: [true]"),
    BASE.replace('type: string, within: ["/workspace"]', "enum: [1]"),
    BASE.replace('type: string, within: ["/workspace"]', "maximum: 1.5"),
    BASE.replace('type: string, within: ["/workspace"]', "maximum: 1"),
]


def test_every_change_of_meaning_changes_the_hash() -> None:
    hashes = [loads_policy(text).hash for text in MEANINGS]
    assert len(set(hashes)) == len(MEANINGS)
