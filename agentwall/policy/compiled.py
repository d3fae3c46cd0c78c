"""The loaded policy: the public model plus everything compiled from it.

Prepare once, evaluate many: patterns, schemas, enum sets, path roots and
the Safe Mode engine for each tool's set of disabled rules are all built at
load, so evaluation is dictionary lookups and precompiled matches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import msgspec

from agentwall.core.canonical import canonical_json, sha256_hex
from agentwall.identity.rules import IdentityRule as SharedIdentityRule
from agentwall.identity.rules import check_identity_rule
from agentwall.policy.methods import builtin_allows
from agentwall.policy.model import (
    IdentityConfig,
    IdentityRule,
    ParameterRule,
    PolicyModel,
    PromptRule,
    RateLimit,
    ResourceRule,
    ToolRule,
)
from agentwall.policy.paths import is_within
from agentwall.policy.safemode import SafeModeEngine
from agentwall.policy.schema import CompiledSchema
from agentwall.policy.secrets import shown
from agentwall.policy.values import Loc, pointer, pointer_of
from agentwall.types import Identity, Origin

_ARGUMENTS: Loc = (None, "arguments")

# Bumped when the meaning of a policy file changes with the same text.
POLICY_FORMAT = "agentwall-policy/2"

# (rule_id, reason, pointer, category)
Violation = tuple[str, str, str, str]


def enum_key(value: Any) -> tuple[str, Any]:
    """Type-tagged identity for enum and claim comparison: true is not 1,
    1 is not 1.0, "1" is not 1."""
    kind = type(value)
    if kind is bool:
        return ("b", value)
    if kind is int:
        return ("i", value)
    if kind is float:
        return ("f", value)
    if kind is str:
        return ("s", value)
    return ("?", id(value))


def _is_int(v: Any) -> bool:
    return type(v) is int


def _is_number(v: Any) -> bool:
    kind = type(v)
    return kind is int or (kind is float and math.isfinite(v))


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: type(v) is str,
    "integer": _is_int,
    "number": _is_number,
    "boolean": lambda v: type(v) is bool,
    "object": lambda v: type(v) is dict,
    "array": lambda v: type(v) is list or type(v) is tuple,
}
_ARTICLE = {"integer": "an integer", "object": "an object", "array": "an array"}


def _describe_type(name: str) -> str:
    return _ARTICLE.get(name, f"a {name}")


class CompiledParam:
    __slots__ = (
        "enum_keys",
        "expect",
        "items",
        "max_items",
        "max_length",
        "maximum",
        "min_items",
        "min_length",
        "minimum",
        "name",
        "pattern",
        "roots",
        "rule",
        "rule_base",
        "schema",
        "type_check",
    )

    def __init__(
        self,
        rule: ParameterRule,
        rule_base: str,
        pattern: Any,
        schema: CompiledSchema | None,
        items: CompiledParam | None = None,
    ) -> None:
        self.rule = rule
        self.name = rule.name
        self.rule_base = rule_base
        # A parameter with string constraints but no declared type must be a
        # string; with number bounds, a number.
        expect = rule.type
        if expect is None and (
            rule.pattern is not None
            or rule.max_length is not None
            or rule.min_length is not None
            or rule.within is not None
        ):
            expect = "string"
        if expect is None and (rule.minimum is not None or rule.maximum is not None):
            expect = "number"
        if expect is None and (
            rule.items is not None or rule.max_items is not None or rule.min_items is not None
        ):
            expect = "array"
        self.expect = expect
        self.type_check = _TYPE_CHECKS[expect] if expect is not None else None
        self.pattern = pattern
        self.schema = schema
        self.enum_keys = (
            frozenset(enum_key(v) for v in rule.enum) if rule.enum is not None else None
        )
        self.roots = rule.within
        self.max_length = rule.max_length
        self.min_length = rule.min_length
        self.minimum = rule.minimum
        self.maximum = rule.maximum
        self.items = items
        self.max_items = rule.max_items
        self.min_items = rule.min_items

    def check(self, value: Any, loc: Loc) -> Violation | None:
        """``loc`` is where the value sits; the pointer is rendered only for a
        violation, so an allowed call never pays for it."""
        base = self.rule_base
        name = self.name
        if self.expect is not None:
            if value is None:
                return (
                    f"{base}.type",
                    f"parameter {name!r} is null but must be {_describe_type(self.expect)}",
                    pointer(loc),
                    "parameter",
                )
            if self.type_check is not None and not self.type_check(value):
                return (
                    f"{base}.type",
                    f"parameter {name!r} must be {_describe_type(self.expect)}",
                    pointer(loc),
                    "parameter",
                )
        if self.enum_keys is not None and enum_key(value) not in self.enum_keys:
            return (
                f"{base}.enum",
                f"parameter {name!r} is not one of the allowed values",
                pointer(loc),
                "parameter",
            )
        if type(value) is str:
            n = len(value)
            if self.max_length is not None and n > self.max_length:
                return (
                    f"{base}.max_length",
                    f"parameter {name!r} is longer than {self.max_length} characters",
                    pointer(loc),
                    "parameter",
                )
            if self.min_length is not None and n < self.min_length:
                return (
                    f"{base}.min_length",
                    f"parameter {name!r} is shorter than {self.min_length} characters",
                    pointer(loc),
                    "parameter",
                )
            if self.pattern is not None and self.pattern.search(value) is None:
                return (
                    f"{base}.pattern",
                    f"parameter {name!r} does not match its pattern",
                    pointer(loc),
                    "parameter",
                )
            if self.roots is not None and not is_within(value, self.roots):
                return (
                    f"{base}.within",
                    f"parameter {name!r} is not a path inside {', '.join(self.roots)}",
                    pointer(loc),
                    "parameter",
                )
        elif type(value) is list or type(value) is tuple:
            n = len(value)
            if self.max_items is not None and n > self.max_items:
                return (
                    f"{base}.max_items",
                    f"parameter {name!r} has more than {self.max_items} items",
                    pointer(loc),
                    "parameter",
                )
            if self.min_items is not None and n < self.min_items:
                return (
                    f"{base}.min_items",
                    f"parameter {name!r} has fewer than {self.min_items} items",
                    pointer(loc),
                    "parameter",
                )
            if self.items is not None:
                for i, item in enumerate(value):
                    item_problem = self.items.check(item, (loc, i))
                    if item_problem is not None:
                        return item_problem
        elif self.minimum is not None or self.maximum is not None:
            if self.minimum is not None and value < self.minimum:
                return (
                    f"{base}.minimum",
                    f"parameter {name!r} is below {self.minimum}",
                    pointer(loc),
                    "parameter",
                )
            if self.maximum is not None and value > self.maximum:
                return (
                    f"{base}.maximum",
                    f"parameter {name!r} is above {self.maximum}",
                    pointer(loc),
                    "parameter",
                )
        if self.schema is not None:
            problem = _schema_problem(self.schema, value)
            if problem is not None:
                sub, message = problem
                return (
                    f"{base}.schema",
                    f"parameter {name!r}: {message}",
                    pointer(loc) + sub,
                    "parameter",
                )
        return None


def _schema_problem(schema: CompiledSchema, value: Any) -> tuple[str, str] | None:
    try:
        schema.validate(value)
    except Exception as exc:  # noqa: BLE001 -- any failure of the validator is a deny
        path = getattr(exc, "path", None)
        sub = ""
        if isinstance(path, list) and path and path[0] == "data":
            sub = pointer_of(*path[1:])
        message = getattr(exc, "message", None)
        if not isinstance(message, str):
            message = "does not match its schema"
        # fastjsonschema names the value "data.x.y"; the pointer says where.
        text = message.replace("data", "value", 1)
        rule = getattr(exc, "rule", None)
        if isinstance(rule, str):
            text = f"fails schema rule {rule!r}: {text}"
        return sub, text
    return None


class CompiledArgs:
    """Declared parameters (of a tool) or arguments (of a prompt)."""

    __slots__ = ("allow_additional", "by_name", "noun", "required", "rule_base")

    def __init__(
        self, params: list[CompiledParam], allow_additional: bool, rule_base: str, noun: str
    ) -> None:
        self.by_name = {p.name: p for p in params}
        self.required = tuple(p.name for p in params if p.rule.required)
        self.allow_additional = allow_additional
        self.rule_base = rule_base
        self.noun = noun  # "parameter" | "argument"

    def check(self, args: dict[str, Any]) -> Violation | None:
        for name in self.required:
            if name not in args:
                return (
                    f"{self.by_name[name].rule_base}.required",
                    f"required {self.noun} {name!r} is missing",
                    pointer_of("arguments", name),
                    "parameter",
                )
        by_name = self.by_name
        for key, value in args.items():
            param = by_name.get(key)
            if param is None:
                if not self.allow_additional:
                    return (
                        f"{self.rule_base}.additional_{self.noun}s",
                        f"{self.noun} {shown(key)} is not declared in the policy",
                        pointer_of("arguments", key),
                        "parameter",
                    )
                continue
            problem = param.check(value, (_ARGUMENTS, key))
            if problem is not None:
                return problem
        return None


def shared_rule(rule: IdentityRule) -> SharedIdentityRule:
    """The identity part's form of a rule.  Claims are always tuples of values
    here, so ``true`` means "equals true", never "present"."""
    return SharedIdentityRule(subjects=rule.subjects, claims=dict(rule.claims), scopes=rule.scopes)


def identity_problem(
    rule: SharedIdentityRule, identity: Identity | None, what: str
) -> tuple[str, str, tuple[str, ...]] | None:
    """(category, reason, required scopes) when ``identity`` may not use
    ``what``, else None.
    The check itself is the identity part's (``check_identity_rule``), so the
    HTTP front-end's 401/403 mapping and this decision agree on every case;
    categories are identity_required, identity_subject, identity_claims and
    identity_scope."""
    refusal = check_identity_rule(rule, identity)
    if refusal is None:
        return None
    return refusal.category, f"{what}: {refusal.reason}", refusal.required_scopes


class CompiledTool:
    __slots__ = ("args", "engine", "identity", "rule", "rule_base")

    def __init__(self, rule: ToolRule, args: CompiledArgs | None, engine: SafeModeEngine) -> None:
        self.rule = rule
        self.args = args
        self.engine = engine
        self.rule_base = f"tools[{rule.name}]"
        self.identity = shared_rule(rule.identity) if rule.identity is not None else None


class CompiledResource:
    __slots__ = ("identity", "index", "pattern", "rule", "rule_base")

    def __init__(self, rule: ResourceRule, index: int, pattern: Any) -> None:
        self.rule = rule
        self.index = index
        self.pattern = pattern
        self.rule_base = f"resources[{index}]"
        self.identity = shared_rule(rule.identity) if rule.identity is not None else None

    def matches(self, uri: str) -> bool:
        return bool(self.pattern.search(uri) is not None)


class CompiledPrompt:
    __slots__ = ("args", "identity", "rule", "rule_base")

    def __init__(self, rule: PromptRule, args: CompiledArgs | None) -> None:
        self.rule = rule
        self.args = args
        self.rule_base = f"prompts[{rule.name}]"
        self.identity = shared_rule(rule.identity) if rule.identity is not None else None


SAFE_MODE_ONLY_WARNING = (
    "WARNING: no policy given: AgentWall is running in SAFE MODE ONLY. Every call that "
    "Safe Mode does not flag is ALLOWED, for every tool, resource, prompt and method. "
    "Pass --policy FILE to enforce an allow-list."
)


class Policy:
    """A loaded, compiled policy.  Immutable after load; safe to share
    between threads and to inherit across fork.  Pickles as its source text
    (compiled RE2 and fastjsonschema objects do not pickle), so a spawned
    worker recompiles it from exactly the text that was hashed."""

    __slots__ = (
        "_prompts",
        "_resources",
        "_tools",
        "engine",
        "hash",
        "model",
        "source_path",
        "source_text",
        "warnings",
    )

    def __init__(
        self,
        model: PolicyModel,
        *,
        tools: dict[str, CompiledTool],
        resources: tuple[CompiledResource, ...],
        prompts: dict[str, CompiledPrompt],
        engine: SafeModeEngine,
        source_path: str | None,
        source_text: str | None,
        warnings: tuple[str, ...],
    ) -> None:
        self.model = model
        self._tools = tools
        self._resources = resources
        self._prompts = prompts
        self.engine = engine
        self.source_path = source_path
        self.source_text = source_text
        self.warnings = warnings
        self.hash = policy_hash(model)

    # -- what other parts read ------------------------------------------
    @property
    def safe_mode_only(self) -> bool:
        return self.model.safe_mode_only

    @property
    def default_action(self) -> str:
        return self.model.default_action

    @property
    def identity(self) -> IdentityConfig | None:
        return self.model.identity

    @property
    def session_rate(self) -> float | None:
        return self.model.session.max_calls_per_second

    @property
    def session_burst(self) -> int | None:
        return self.model.session.burst

    @property
    def client_rate(self) -> float | None:
        """``client.max_calls_per_second``: one bucket per client across its sessions."""
        client = self.model.client
        return None if client is None else client.max_calls_per_second

    @property
    def client_burst(self) -> int | None:
        client = self.model.client
        return None if client is None else client.burst

    @property
    def tools(self) -> tuple[ToolRule, ...]:
        return self.model.tools

    def tool(self, name: str) -> ToolRule | None:
        compiled = self._tools.get(name)
        return compiled.rule if compiled is not None else None

    def tool_rate_limit(self, name: str) -> RateLimit | None:
        compiled = self._tools.get(name)
        return compiled.rule.rate_limit if compiled is not None else None

    def tool_rate(self, name: str) -> float | None:
        limit = self.tool_rate_limit(name)
        return limit.calls_per_second if limit is not None else None

    @property
    def identity_claims_used(self) -> frozenset[str]:
        """Claim names any identity rule looks at: the identity class used in
        decision-cache keys must cover at least these, the subject and scopes."""
        names: set[str] = set()
        rules: list[IdentityRule | None] = [t.identity for t in self.model.tools]
        rules += [r.identity for r in self.model.resources]
        rules += [p.identity for p in self.model.prompts]
        for rule in rules:
            if rule is not None:
                names.update(rule.claims)
        return frozenset(names)

    def method_rule(self, method: str, origin: Origin) -> tuple[str, str | None]:
        """(action, rule id) for a non-targeted method.  Rule id None means
        default_action decided."""
        explicit = self.model.methods.get(method)
        if explicit is not None:
            return explicit, f"methods[{method}]"
        if self.model.safe_mode_only:
            return "allow", None
        if builtin_allows(method, origin):
            return "allow", f"builtin.methods[{method}]"
        return self.model.default_action, None

    def __reduce__(self) -> tuple[Callable[..., Policy], tuple[str | None, str | None]]:
        return (_rebuild, (self.source_text, self.source_path))

    def __repr__(self) -> str:
        where = self.source_path or ("<safe mode only>" if self.safe_mode_only else "<text>")
        return f"<Policy {where} {self.hash[:12]}>"


def _rebuild(text: str | None, source_path: str | None) -> Policy:
    from agentwall.policy.loader import loads_policy, safe_mode_only_policy

    if text is None:
        return safe_mode_only_policy()
    return loads_policy(text, source_path=source_path)


def canonical_form(model: PolicyModel) -> dict[str, Any]:
    """What ``Policy.hash`` covers: the model with every field that equals its
    default left out, at every level of nesting.

    Stability rule: adding a new optional key whose default keeps today's
    meaning leaves every existing policy's hash (and so its ``promote``
    signature and decision-cache keys) unchanged, while any value that
    differs from a default -- that is, any change of meaning -- is in the
    form and changes the hash.  Changing an existing default's value, or
    what a value means, is a change of format: bump ``POLICY_FORMAT``.
    """
    return {"format": POLICY_FORMAT, "policy": _without_defaults(model)}


def _without_defaults(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):
        out: dict[str, Any] = {}
        for field in msgspec.structs.fields(value):
            item = getattr(value, field.name)
            if _is_default(item, field):
                continue
            out[field.encode_name] = _without_defaults(item)
        return out
    if isinstance(value, dict):
        return {key: _without_defaults(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [_without_defaults(item) for item in value]
    return msgspec.to_builtins(value)


def _is_default(value: Any, field: msgspec.structs.FieldInfo) -> bool:
    if field.default is not msgspec.NODEFAULT:
        default = field.default
    elif field.default_factory is not msgspec.NODEFAULT:
        default = field.default_factory()
    else:
        return False  # a required field is always in the form
    # Compared as canonical JSON, not with ==: True == 1 and 1 == 1.0 in
    # Python, but they are different values in a policy.
    return bool(
        canonical_json(msgspec.to_builtins(value)) == canonical_json(msgspec.to_builtins(default))
    )


def policy_hash(model: PolicyModel) -> str:
    return sha256_hex(canonical_json(canonical_form(model)))
