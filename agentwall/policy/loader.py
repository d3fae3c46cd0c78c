"""Strict loading: YAML text -> typed model -> compiled Policy.

Every rejection names the file, line and column, the key, and a "did you
mean" suggestion where one is close.  A policy either loads completely or not
at all; nothing is skipped, defaulted to allow, or fixed up silently.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

from agentwall.errors import PolicyError
from agentwall.policy.compiled import (
    SAFE_MODE_ONLY_WARNING,
    CompiledArgs,
    CompiledParam,
    CompiledPrompt,
    CompiledResource,
    CompiledTool,
    Policy,
)
from agentwall.policy.methods import ALL_KNOWN, TARGETED
from agentwall.policy.model import (
    ACTIONS,
    DEFAULT_JWT_ALGORITHMS,
    JWT_ALGORITHMS,
    PARAM_TYPES,
    RISKS,
    ClientConfig,
    IdentityConfig,
    IdentityRule,
    Limits,
    ParameterRule,
    PolicyModel,
    PromptRule,
    RateLimit,
    ResourceRule,
    SafeModeConfig,
    SafeModeOverride,
    SessionConfig,
    ToolRule,
)
from agentwall.policy.paths import normalise_root
from agentwall.policy.patterns import PatternSyntaxError, compile_anchored, compile_re2
from agentwall.policy.safemode import SAFE_RULE_IDS, SafeModeEngine, parse_allow_private
from agentwall.policy.schema import compile_schema
from agentwall.policy.yamlsrc import Pos, YMap, YNode, YScalar, YSeq, parse_yaml

MAX_POLICY_BYTES = 4 * 1024 * 1024

TOP_KEYS = (
    "version",
    "description",
    "default_action",
    "identity",
    "session",
    "client",
    "limits",
    "safe_mode",
    "methods",
    "tools",
    "resources",
    "prompts",
)
TOOL_KEYS = (
    "name",
    "action",
    "risk",
    "description",
    "parameters",
    "additional_parameters",
    "identity",
    "rate_limit",
    "safe_mode",
)
PARAM_KEYS = (
    "name",
    "type",
    "required",
    "description",
    "pattern",
    "max_length",
    "min_length",
    "within",
    "enum",
    "minimum",
    "maximum",
    "items",
    "max_items",
    "min_items",
    "schema",
)
# An array's items rule is a parameter rule without a name or "required".
ITEM_KEYS = tuple(k for k in PARAM_KEYS if k not in ("name", "required"))
RESOURCE_KEYS = ("uri", "action", "risk", "description", "within", "identity")
PROMPT_KEYS = (
    "name",
    "action",
    "risk",
    "description",
    "arguments",
    "additional_arguments",
    "identity",
)
IDENTITY_KEYS = (
    "issuer",
    "audience",
    "jwks_uri",
    "algorithms",
    "required_claims",
    "clock_skew_seconds",
    "scope_implies",
    "resource",
    "scopes_supported",
)
IDENTITY_RULE_KEYS = ("subjects", "claims", "scopes")
SESSION_KEYS = ("max_calls_per_second", "burst")
CLIENT_KEYS = ("max_calls_per_second", "burst")
LIMIT_KEYS = ("max_depth", "max_bytes", "max_string_length")
SAFE_MODE_KEYS = ("disable", "allow_private")
TOOL_SAFE_MODE_KEYS = ("disable",)
RATE_KEYS = ("calls_per_second", "burst")

MAX_DEPTH_LIMIT = 512
MAX_BYTES_LIMIT = 64 * 1024 * 1024


def _suggest(word: str, choices: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


class _Ctx:
    __slots__ = ("source", "warnings")

    def __init__(self, source: str | None) -> None:
        self.source = source
        self.warnings: list[str] = []

    def fail(
        self, message: str, pos: Pos, key: str | None = None, suggestion: str | None = None
    ) -> NoReturn:
        raise PolicyError(
            message,
            path=self.source,
            line=pos.line,
            column=pos.column,
            key=key,
            suggestion=suggestion,
        )

    # -- shapes ------------------------------------------------------------
    def map(
        self, node: YNode, what: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> YMap:
        if not isinstance(node, YMap):
            self.fail(f"{what} must be a mapping", node.pos)
        for entry in node.entries:
            if entry.key not in allowed:
                self.fail(
                    f"unknown key {entry.key!r} in {what}",
                    entry.key_pos,
                    key=entry.key,
                    suggestion=_suggest(entry.key, allowed),
                )
        for key in required:
            if key not in node.index:
                self.fail(f"{what} is missing the required key {key!r}", node.pos, key=key)
        return node

    def seq(self, node: YNode, what: str) -> YSeq:
        if not isinstance(node, YSeq):
            self.fail(f"{what} must be a list", node.pos)
        return node

    def scalar(self, node: YNode, what: str) -> YScalar:
        if not isinstance(node, YScalar):
            self.fail(
                f"{what} must be a single value, not a "
                f"{'mapping' if isinstance(node, YMap) else 'list'}",
                node.pos,
            )
        return node

    def string(self, node: YNode, what: str, *, allow_empty: bool = False) -> str:
        value = self.scalar(node, what).value
        if not isinstance(value, str):
            self.fail(f"{what} must be a string (quote it)", node.pos)
        if not allow_empty and not value:
            self.fail(f"{what} must not be empty", node.pos)
        return value

    def choice(self, node: YNode, what: str, choices: tuple[str, ...]) -> str:
        value = self.scalar(node, what).value
        if not isinstance(value, str) or value not in choices:
            shown = value if isinstance(value, str) else repr(value)
            self.fail(
                f"{what} must be one of {', '.join(choices)} (got {shown!r})",
                node.pos,
                suggestion=_suggest(str(shown), choices) if isinstance(value, str) else None,
            )
        return value

    def boolean(self, node: YNode, what: str) -> bool:
        value = self.scalar(node, what).value
        if not isinstance(value, bool):
            self.fail(f"{what} must be true or false", node.pos)
        return value

    def integer(self, node: YNode, what: str, lo: int, hi: int) -> int:
        value = self.scalar(node, what).value
        if type(value) is not int:
            self.fail(f"{what} must be an integer", node.pos)
        if not lo <= value <= hi:
            self.fail(f"{what} must be between {lo} and {hi} (got {value})", node.pos)
        return value

    def number(self, node: YNode, what: str, *, positive: bool = False) -> int | float:
        value = self.scalar(node, what).value
        if type(value) not in (int, float):
            self.fail(f"{what} must be a number", node.pos)
        assert isinstance(value, int | float)
        if positive and not value > 0:
            self.fail(f"{what} must be greater than 0", node.pos)
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        return value

    def strings(self, node: YNode, what: str, *, nonempty: bool = True) -> tuple[str, ...]:
        seq = self.seq(node, what)
        if nonempty and not seq.items:
            self.fail(f"{what} must not be empty", seq.pos)
        out = tuple(self.string(item, f"an entry of {what}") for item in seq.items)
        seen: set[str] = set()
        for item, value in zip(seq.items, out, strict=True):
            if value in seen:
                self.fail(f"{what} lists {value!r} twice", item.pos)
            seen.add(value)
        return out


# -- sections -----------------------------------------------------------------


def _version(ctx: _Ctx, node: YNode) -> str:
    value = ctx.scalar(node, "version").value
    text = str(value) if type(value) in (int, str) else None
    if text != "2":
        ctx.fail(
            f'unsupported policy version {value!r}: this AgentWall reads version "2"',
            node.pos,
            key="version",
        )
    return "2"


def _claims(ctx: _Ctx, node: YNode, what: str) -> dict[str, tuple[str | int | bool, ...]]:
    if not isinstance(node, YMap):
        ctx.fail(f"{what} must be a mapping of claim name to value(s)", node.pos)
    out: dict[str, tuple[str | int | bool, ...]] = {}
    for entry in node.entries:
        items = entry.value.items if isinstance(entry.value, YSeq) else [entry.value]
        values: list[str | int | bool] = []
        for item in items:
            v = ctx.scalar(item, f"claim {entry.key!r}").value
            if not isinstance(v, str | int | bool) or isinstance(v, float):
                ctx.fail(
                    f"claim {entry.key!r} values must be strings, integers or booleans",
                    item.pos,
                    key=entry.key,
                )
            values.append(v)
        if not values:
            ctx.fail(f"claim {entry.key!r} lists no values", entry.value.pos, key=entry.key)
        out[entry.key] = tuple(values)
    return out


def _identity_config(ctx: _Ctx, node: YNode) -> IdentityConfig:
    m = ctx.map(node, "identity", IDENTITY_KEYS, required=("issuer", "audience"))
    issuer = ctx.string(m.index["issuer"].value, "identity.issuer")
    if not issuer.startswith(("https://", "http://")):
        ctx.fail(
            "identity.issuer must be an http(s) URL", m.index["issuer"].value.pos, key="issuer"
        )
    audience_node = m.index["audience"].value
    audience: str | tuple[str, ...]
    if isinstance(audience_node, YSeq):
        audiences = ctx.strings(audience_node, "identity.audience")
        audience = audiences[0] if len(audiences) == 1 else audiences
    else:
        audience = ctx.string(audience_node, "identity.audience")
    jwks_uri = None
    if (n := m.get("jwks_uri")) is not None:
        jwks_uri = ctx.string(n, "identity.jwks_uri")
        if not jwks_uri.startswith(("https://", "http://")):
            ctx.fail("identity.jwks_uri must be an http(s) URL", n.pos, key="jwks_uri")
    algorithms = DEFAULT_JWT_ALGORITHMS
    if (n := m.get("algorithms")) is not None:
        algorithms = ctx.strings(n, "identity.algorithms")
        for item, alg in zip(ctx.seq(n, "").items, algorithms, strict=True):
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                ctx.fail(
                    f"algorithm {alg!r} is never allowed: tokens must be signed with an "
                    "asymmetric key (none and HMAC allow forgery and key confusion)",
                    item.pos,
                    key="algorithms",
                )
            if alg not in JWT_ALGORITHMS:
                ctx.fail(
                    f"unknown algorithm {alg!r}",
                    item.pos,
                    key="algorithms",
                    suggestion=_suggest(alg, JWT_ALGORITHMS),
                )
    required_claims: dict[str, tuple[str | int | bool, ...]] = {}
    if (n := m.get("required_claims")) is not None:
        required_claims = _claims(ctx, n, "identity.required_claims")
    skew = 60
    if (n := m.get("clock_skew_seconds")) is not None:
        skew = ctx.integer(n, "identity.clock_skew_seconds", 0, 600)
    scope_implies: dict[str, tuple[str, ...]] = {}
    if (n := m.get("scope_implies")) is not None:
        scope_implies = _scope_implies(ctx, n)
    resource = None
    if (n := m.get("resource")) is not None:
        resource = ctx.string(n, "identity.resource")
        if not _RESOURCE_URL.fullmatch(resource):
            ctx.fail(
                "identity.resource must be an absolute http(s) URL without a fragment "
                "(RFC 9728), e.g. https://mcp.example.com/mcp",
                n.pos,
                key="resource",
            )
    scopes_supported: tuple[str, ...] = ()
    if (n := m.get("scopes_supported")) is not None:
        scopes_supported = ctx.strings(n, "identity.scopes_supported")
        for item, scope in zip(ctx.seq(n, "").items, scopes_supported, strict=True):
            _scope_token(ctx, item, scope, "identity.scopes_supported")
    return IdentityConfig(
        issuer=issuer,
        audience=audience,
        jwks_uri=jwks_uri,
        algorithms=algorithms,
        required_claims=required_claims,
        clock_skew_seconds=skew,
        scope_implies=scope_implies,
        resource=resource,
        scopes_supported=scopes_supported,
    )


# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).  A space
# would split one scope into two; quotes and backslashes would break the
# scope="..." parameter of a WWW-Authenticate challenge.
_SCOPE_TOKEN = compile_re2(r"[\x21\x23-\x5b\x5d-\x7e]+")
_RESOURCE_URL = compile_re2(r"https?://[^/?#\s]+(?:[/?][^#\s]*)?")


def _scope_token(ctx: _Ctx, node: YNode, scope: str, what: str) -> None:
    if not _SCOPE_TOKEN.fullmatch(scope):
        ctx.fail(
            f"{what}: {scope!r} is not a scope token (printable ASCII without spaces, "
            "quotes or backslashes, RFC 6749)",
            node.pos,
        )


def _scope_implies(ctx: _Ctx, node: YNode) -> dict[str, tuple[str, ...]]:
    """``{broad: [narrower, ...]}``: every key and value a scope token, every
    list non-empty and without repeats."""
    what = "identity.scope_implies"
    if not isinstance(node, YMap):
        ctx.fail(f"{what} must be a mapping of scope to the scopes it implies", node.pos)
    out: dict[str, tuple[str, ...]] = {}
    for entry in node.entries:
        if not _SCOPE_TOKEN.fullmatch(entry.key):
            ctx.fail(
                f"{what}: {entry.key!r} is not a scope token (printable ASCII without spaces, "
                "quotes or backslashes, RFC 6749)",
                entry.key_pos,
                key=entry.key,
            )
        narrower = ctx.strings(entry.value, f"{what}.{entry.key}")
        for item, scope in zip(ctx.seq(entry.value, "").items, narrower, strict=True):
            _scope_token(ctx, item, scope, f"{what}.{entry.key}")
        out[entry.key] = narrower
    return out


def _identity_rule(ctx: _Ctx, node: YNode, what: str) -> IdentityRule:
    m = ctx.map(node, what, IDENTITY_RULE_KEYS)
    subjects = ctx.strings(n, f"{what}.subjects") if (n := m.get("subjects")) else ()
    scopes = ctx.strings(n, f"{what}.scopes") if (n := m.get("scopes")) else ()
    claims = _claims(ctx, n, f"{what}.claims") if (n := m.get("claims")) else {}
    return IdentityRule(subjects=subjects, claims=claims, scopes=scopes)


def _rate_limit(ctx: _Ctx, node: YNode, what: str) -> RateLimit:
    m = ctx.map(node, what, RATE_KEYS, required=("calls_per_second",))
    rate = float(
        ctx.number(m.index["calls_per_second"].value, f"{what}.calls_per_second", positive=True)
    )
    burst = None
    if (n := m.get("burst")) is not None:
        burst = ctx.integer(n, f"{what}.burst", 1, 1_000_000)
    return RateLimit(calls_per_second=rate, burst=burst)


def _session(ctx: _Ctx, node: YNode) -> SessionConfig:
    m = ctx.map(node, "session", SESSION_KEYS)
    rate = None
    if (n := m.get("max_calls_per_second")) is not None:
        rate = float(ctx.number(n, "session.max_calls_per_second", positive=True))
    burst = None
    if (n := m.get("burst")) is not None:
        burst = ctx.integer(n, "session.burst", 1, 1_000_000)
    return SessionConfig(max_calls_per_second=rate, burst=burst)


def _client(ctx: _Ctx, node: YNode) -> ClientConfig:
    m = ctx.map(node, "client", CLIENT_KEYS, required=("max_calls_per_second",))
    rate = float(
        ctx.number(
            m.index["max_calls_per_second"].value, "client.max_calls_per_second", positive=True
        )
    )
    burst = None
    if (n := m.get("burst")) is not None:
        burst = ctx.integer(n, "client.burst", 1, 1_000_000)
    return ClientConfig(max_calls_per_second=rate, burst=burst)


def _limits(ctx: _Ctx, node: YNode) -> Limits:
    m = ctx.map(node, "limits", LIMIT_KEYS)
    depth = Limits().max_depth
    size = Limits().max_bytes
    max_str = None
    if (n := m.get("max_depth")) is not None:
        depth = ctx.integer(n, "limits.max_depth", 1, MAX_DEPTH_LIMIT)
    if (n := m.get("max_bytes")) is not None:
        size = ctx.integer(n, "limits.max_bytes", 64, MAX_BYTES_LIMIT)
    if (n := m.get("max_string_length")) is not None:
        max_str = ctx.integer(n, "limits.max_string_length", 1, MAX_BYTES_LIMIT)
    return Limits(max_depth=depth, max_bytes=size, max_string_length=max_str)


def _rule_ids(ctx: _Ctx, node: YNode, what: str) -> tuple[str, ...]:
    ids = ctx.strings(node, what, nonempty=False)
    for item, rule_id in zip(ctx.seq(node, what).items, ids, strict=True):
        if rule_id not in SAFE_RULE_IDS:
            ctx.fail(
                f"unknown Safe Mode rule id {rule_id!r} (rules are switched off by their "
                "full id, e.g. safe_mode.path.dotenv)",
                item.pos,
                key="disable",
                suggestion=_suggest(rule_id, SAFE_RULE_IDS),
            )
    return ids


def _safe_mode(ctx: _Ctx, node: YNode) -> SafeModeConfig:
    m = ctx.map(node, "safe_mode", SAFE_MODE_KEYS)
    disable = _rule_ids(ctx, n, "safe_mode.disable") if (n := m.get("disable")) else ()
    allow: tuple[str, ...] = ()
    if (n := m.get("allow_private")) is not None:
        allow = ctx.strings(n, "safe_mode.allow_private", nonempty=False)
        for item, spec in zip(ctx.seq(n, "").items, allow, strict=True):
            problem = parse_allow_private(spec)
            if problem is not None:
                ctx.fail(
                    f"invalid allow_private entry {spec!r}: {problem}",
                    item.pos,
                    key="allow_private",
                )
    for rule_id in disable:
        ctx.warnings.append(f"Safe Mode rule {rule_id} is disabled for every call")
    return SafeModeConfig(disable=disable, allow_private=allow)


def _methods(ctx: _Ctx, node: YNode) -> dict[str, str]:
    if not isinstance(node, YMap):
        ctx.fail("methods must be a mapping of method name to allow or deny", node.pos)
    out: dict[str, str] = {}
    for entry in node.entries:
        if entry.key in TARGETED:
            section = {"tools/call": "tools", "prompts/get": "prompts"}.get(entry.key, "resources")
            ctx.fail(
                f"{entry.key} is judged by the {section}: section, not methods:",
                entry.key_pos,
                key=entry.key,
            )
        out[entry.key] = ctx.choice(entry.value, f"methods.{entry.key}", ACTIONS)
        if entry.key not in ALL_KNOWN:
            hint = _suggest(entry.key, ALL_KNOWN)
            ctx.warnings.append(
                f"methods: {entry.key!r} is not a method AgentWall knows"
                + (f" (did you mean {hint!r}?)" if hint else "")
            )
    return out


def _roots(ctx: _Ctx, node: YNode, what: str) -> tuple[str, ...]:
    roots = ctx.strings(node, what)
    out: list[str] = []
    for item, root in zip(ctx.seq(node, what).items, roots, strict=True):
        norm = normalise_root(root)
        if norm is None:
            ctx.fail(
                f"{what} entries must be absolute paths (got {root!r})", item.pos, key="within"
            )
        out.append(norm)
    return tuple(out)


def _pattern(ctx: _Ctx, node: YNode, what: str) -> tuple[str, Any]:
    source = ctx.string(node, what, allow_empty=True)
    try:
        return source, compile_anchored(source)
    except PatternSyntaxError as exc:
        hint = " (a \\Q quote must end with \\E)" if "\\Q" in source else ""
        ctx.fail(f"RE2 cannot compile {what} {source!r}: {exc}{hint}", node.pos, key="pattern")


def _enum(
    ctx: _Ctx, node: YNode, what: str, ptype: str | None
) -> tuple[str | int | float | bool, ...]:
    seq = ctx.seq(node, what)
    if not seq.items:
        ctx.fail(f"{what} must list at least one value", seq.pos)
    values: list[str | int | float | bool] = []
    for item in seq.items:
        v = ctx.scalar(item, f"an entry of {what}").value
        if v is None or not isinstance(v, str | int | float | bool):
            ctx.fail(f"{what} values must be strings, numbers or booleans", item.pos, key="enum")
        if ptype is not None:
            ok = {
                "string": type(v) is str,
                "integer": type(v) is int,
                "number": type(v) in (int, float),
                "boolean": type(v) is bool,
            }.get(ptype, False)
            if not ok:
                ctx.fail(
                    f"{what} value {v!r} is not of the parameter's type {ptype}",
                    item.pos,
                    key="enum",
                )
        values.append(v)
    return tuple(values)


def _parameters(
    ctx: _Ctx, node: YNode, what: str, rule_base: str, noun: str
) -> list[tuple[ParameterRule, CompiledParam]]:
    seq = ctx.seq(node, what)
    out: list[tuple[ParameterRule, CompiledParam]] = []
    seen: dict[str, Pos] = {}
    for item in seq.items:
        m = ctx.map(item, f"a {noun} of {what}", PARAM_KEYS, required=("name",))
        name = ctx.string(m.index["name"].value, f"{noun} name")
        if name in seen:
            ctx.fail(
                f"{noun} {name!r} is declared twice (first at line {seen[name].line})",
                m.index["name"].value.pos,
                key="name",
            )
        seen[name] = m.index["name"].value.pos
        base = f"{rule_base}.{noun}s[{name}]"
        out.append(_parameter(ctx, m, name, f"{noun} {name!r}", base))
    return out


def _parameter(
    ctx: _Ctx, m: YMap, name: str, label: str, base: str
) -> tuple[ParameterRule, CompiledParam]:
    ptype = ctx.choice(n, f"{label} type", PARAM_TYPES) if (n := m.get("type")) else None
    required = ctx.boolean(n, f"{label} required") if (n := m.get("required")) else False
    description = (
        ctx.string(n, f"{label} description", allow_empty=True)
        if (n := m.get("description"))
        else None
    )
    groups: dict[str, list[str]] = {
        "string": [k for k in ("pattern", "max_length", "min_length", "within") if k in m.index],
        "number": [k for k in ("minimum", "maximum") if k in m.index],
        "array": [k for k in ("items", "max_items", "min_items") if k in m.index],
    }
    allowed_types = {"string": ("string",), "number": ("integer", "number"), "array": ("array",)}
    used = [g for g, keys in groups.items() if keys]
    for group in used:
        if ptype is not None and ptype not in allowed_types[group]:
            k = groups[group][0]
            ctx.fail(
                f"{label}: {k} applies to {group}s, but the type is {ptype}", m.key_pos(k), key=k
            )
    if len(used) > 1:
        k = groups[used[1]][0]
        ctx.fail(
            f"{label}: {used[0]} and {used[1]} constraints cannot be combined", m.key_pos(k), key=k
        )
    pattern_src, pattern = (None, None)
    if (n := m.get("pattern")) is not None:
        pattern_src, pattern = _pattern(ctx, n, f"{label} pattern")
    max_length = (
        ctx.integer(n, f"{label} max_length", 0, MAX_BYTES_LIMIT)
        if (n := m.get("max_length")) is not None
        else None
    )
    min_length = (
        ctx.integer(n, f"{label} min_length", 0, MAX_BYTES_LIMIT)
        if (n := m.get("min_length")) is not None
        else None
    )
    if max_length is not None and min_length is not None and min_length > max_length:
        ctx.fail(
            f"{label}: min_length is greater than max_length",
            m.key_pos("min_length"),
            key="min_length",
        )
    within = _roots(ctx, n, f"{label} within") if (n := m.get("within")) else None
    enum = _enum(ctx, n, f"{label} enum", ptype) if (n := m.get("enum")) else None
    minimum = ctx.number(n, f"{label} minimum") if (n := m.get("minimum")) is not None else None
    maximum = ctx.number(n, f"{label} maximum") if (n := m.get("maximum")) is not None else None
    if minimum is not None and maximum is not None and minimum > maximum:
        ctx.fail(f"{label}: minimum is greater than maximum", m.key_pos("minimum"), key="minimum")
    max_items = (
        ctx.integer(n, f"{label} max_items", 0, MAX_BYTES_LIMIT)
        if (n := m.get("max_items")) is not None
        else None
    )
    min_items = (
        ctx.integer(n, f"{label} min_items", 0, MAX_BYTES_LIMIT)
        if (n := m.get("min_items")) is not None
        else None
    )
    if max_items is not None and min_items is not None and min_items > max_items:
        ctx.fail(
            f"{label}: min_items is greater than max_items", m.key_pos("min_items"), key="min_items"
        )
    items_rule: ParameterRule | None = None
    items_compiled: CompiledParam | None = None
    if (n := m.get("items")) is not None:
        im = ctx.map(n, f"{label} items", ITEM_KEYS)
        items_rule, items_compiled = _parameter(
            ctx, im, f"{name}[]", f"{label} items", f"{base}.items"
        )
    schema_node = m.get("schema")
    schema = (
        compile_schema(schema_node, ctx.source, f"{label} schema")
        if schema_node is not None
        else None
    )
    rule = ParameterRule(
        name=name,
        type=ptype,  # type: ignore[arg-type]
        required=required,
        description=description,
        pattern=pattern_src,
        max_length=max_length,
        min_length=min_length,
        within=within,
        enum=enum,
        minimum=minimum,
        maximum=maximum,
        max_items=max_items,
        min_items=min_items,
        items=items_rule,
        schema=schema.effective
        if schema is not None and isinstance(schema.effective, dict)
        else None,
    )
    return rule, CompiledParam(rule, base, pattern, schema, items_compiled)


def _tool(
    ctx: _Ctx,
    node: YNode,
    global_disabled: tuple[str, ...],
    engines: dict[frozenset[str], SafeModeEngine],
    allow_private: tuple[str, ...],
) -> tuple[ToolRule, CompiledTool]:
    m = ctx.map(node, "a tool", TOOL_KEYS, required=("name", "action"))
    name = ctx.string(m.index["name"].value, "tool name")
    if name != name.strip():
        ctx.fail(
            f"tool name {name!r} has surrounding whitespace", m.index["name"].value.pos, key="name"
        )
    action = ctx.choice(m.index["action"].value, f"tool {name!r} action", ACTIONS)
    risk = ctx.choice(n, f"tool {name!r} risk", RISKS) if (n := m.get("risk")) else None
    description = (
        ctx.string(n, f"tool {name!r} description", allow_empty=True)
        if (n := m.get("description"))
        else None
    )
    rule_base = f"tools[{name}]"
    additional = (
        ctx.choice(n, f"tool {name!r} additional_parameters", ACTIONS)
        if (n := m.get("additional_parameters"))
        else "deny"
    )
    params: tuple[ParameterRule, ...] | None = None
    args: CompiledArgs | None = None
    if (n := m.get("parameters")) is not None:
        pairs = _parameters(ctx, n, f"tool {name!r} parameters", rule_base, "parameter")
        params = tuple(p for p, _ in pairs)
        args = CompiledArgs([c for _, c in pairs], additional == "allow", rule_base, "parameter")
    elif action == "allow":
        ctx.warnings.append(f"tool {name!r} declares no parameters and accepts any arguments")
    identity = (
        _identity_rule(ctx, n, f"tool {name!r} identity")
        if (n := m.get("identity")) is not None
        else None
    )
    rate = (
        _rate_limit(ctx, n, f"tool {name!r} rate_limit")
        if (n := m.get("rate_limit")) is not None
        else None
    )
    override = SafeModeOverride()
    if (n := m.get("safe_mode")) is not None:
        sm = ctx.map(n, f"tool {name!r} safe_mode", TOOL_SAFE_MODE_KEYS)
        disable = (
            _rule_ids(ctx, d, f"tool {name!r} safe_mode.disable")
            if (d := sm.get("disable"))
            else ()
        )
        override = SafeModeOverride(disable=disable)
        for rule_id in disable:
            ctx.warnings.append(f"Safe Mode rule {rule_id} is disabled for tool {name!r}")
    disabled = frozenset(global_disabled) | frozenset(override.disable)
    engine = engines.get(disabled)
    if engine is None:
        engine = engines[disabled] = SafeModeEngine(disabled, allow_private)
    rule = ToolRule(
        name=name,
        action=action,  # type: ignore[arg-type]
        risk=risk,  # type: ignore[arg-type]
        description=description,
        parameters=params,
        additional_parameters=additional,  # type: ignore[arg-type]
        identity=identity,
        rate_limit=rate,
        safe_mode=override,
    )
    return rule, CompiledTool(rule, args, engine)


def _resource(ctx: _Ctx, node: YNode, index: int) -> tuple[ResourceRule, CompiledResource]:
    m = ctx.map(node, "a resource", RESOURCE_KEYS, required=("uri", "action"))
    uri, pattern = _pattern(ctx, m.index["uri"].value, f"resources[{index}] uri")
    action = ctx.choice(m.index["action"].value, f"resources[{index}] action", ACTIONS)
    risk = ctx.choice(n, f"resources[{index}] risk", RISKS) if (n := m.get("risk")) else None
    description = (
        ctx.string(n, "description", allow_empty=True) if (n := m.get("description")) else None
    )
    within = _roots(ctx, n, f"resources[{index}] within") if (n := m.get("within")) else None
    identity = (
        _identity_rule(ctx, n, f"resources[{index}] identity")
        if (n := m.get("identity")) is not None
        else None
    )
    rule = ResourceRule(
        uri=uri,
        action=action,  # type: ignore[arg-type]
        risk=risk,  # type: ignore[arg-type]
        description=description,
        within=within,
        identity=identity,
    )
    return rule, CompiledResource(rule, index, pattern)


def _prompt(ctx: _Ctx, node: YNode) -> tuple[PromptRule, CompiledPrompt]:
    m = ctx.map(node, "a prompt", PROMPT_KEYS, required=("name", "action"))
    name = ctx.string(m.index["name"].value, "prompt name")
    action = ctx.choice(m.index["action"].value, f"prompt {name!r} action", ACTIONS)
    risk = ctx.choice(n, f"prompt {name!r} risk", RISKS) if (n := m.get("risk")) else None
    description = (
        ctx.string(n, "description", allow_empty=True) if (n := m.get("description")) else None
    )
    rule_base = f"prompts[{name}]"
    additional = (
        ctx.choice(n, f"prompt {name!r} additional_arguments", ACTIONS)
        if (n := m.get("additional_arguments"))
        else "deny"
    )
    arguments: tuple[ParameterRule, ...] | None = None
    args: CompiledArgs | None = None
    if (n := m.get("arguments")) is not None:
        pairs = _parameters(ctx, n, f"prompt {name!r} arguments", rule_base, "argument")
        arguments = tuple(p for p, _ in pairs)
        args = CompiledArgs([c for _, c in pairs], additional == "allow", rule_base, "argument")
    identity = (
        _identity_rule(ctx, n, f"prompt {name!r} identity")
        if (n := m.get("identity")) is not None
        else None
    )
    rule = PromptRule(
        name=name,
        action=action,  # type: ignore[arg-type]
        risk=risk,  # type: ignore[arg-type]
        description=description,
        arguments=arguments,
        additional_arguments=additional,  # type: ignore[arg-type]
        identity=identity,
    )
    return rule, CompiledPrompt(rule, args)


def _build(text: str, source: str | None) -> Policy:
    ctx = _Ctx(source)
    root = parse_yaml(text, source)
    top = ctx.map(root, "the policy", TOP_KEYS, required=("version", "default_action"))
    version = _version(ctx, top.index["version"].value)
    default_action = ctx.choice(top.index["default_action"].value, "default_action", ACTIONS)
    if default_action == "allow":
        ctx.warnings.append(
            "default_action is allow: tools, resources, prompts and methods "
            "the policy does not list are ALLOWED (promote refuses this)"
        )
    description = (
        ctx.string(n, "description", allow_empty=True)
        if (n := top.get("description")) is not None
        else None
    )
    identity = _identity_config(ctx, n) if (n := top.get("identity")) is not None else None
    session = _session(ctx, n) if (n := top.get("session")) is not None else SessionConfig()
    client = _client(ctx, n) if (n := top.get("client")) is not None else None
    limits = _limits(ctx, n) if (n := top.get("limits")) is not None else Limits()
    safe = _safe_mode(ctx, n) if (n := top.get("safe_mode")) is not None else SafeModeConfig()
    methods = _methods(ctx, n) if (n := top.get("methods")) is not None else {}

    engines: dict[frozenset[str], SafeModeEngine] = {}
    base_engine = engines[frozenset(safe.disable)] = SafeModeEngine(
        safe.disable, safe.allow_private
    )
    tools: dict[str, CompiledTool] = {}
    tool_rules: list[ToolRule] = []
    if (n := top.get("tools")) is not None:
        for item in ctx.seq(n, "tools").items:
            rule, compiled = _tool(ctx, item, safe.disable, engines, safe.allow_private)
            if rule.name in tools:
                ctx.fail(f"tool {rule.name!r} is listed twice", item.pos, key="name")
            tools[rule.name] = compiled
            tool_rules.append(rule)
    resources: list[CompiledResource] = []
    if (n := top.get("resources")) is not None:
        for i, item in enumerate(ctx.seq(n, "resources").items):
            resources.append(_resource(ctx, item, i)[1])
    prompts: dict[str, CompiledPrompt] = {}
    if (n := top.get("prompts")) is not None:
        for item in ctx.seq(n, "prompts").items:
            prule, pcompiled = _prompt(ctx, item)
            if prule.name in prompts:
                ctx.fail(f"prompt {prule.name!r} is listed twice", item.pos, key="name")
            prompts[prule.name] = pcompiled

    model = PolicyModel(
        version=version,
        description=description,
        default_action=default_action,  # type: ignore[arg-type]
        identity=identity,
        session=session,
        client=client,
        limits=limits,
        safe_mode=safe,
        methods=methods,  # type: ignore[arg-type]
        tools=tuple(tool_rules),
        resources=tuple(r.rule for r in resources),
        prompts=tuple(p.rule for p in prompts.values()),
    )
    return Policy(
        model,
        tools=tools,
        resources=tuple(resources),
        prompts=prompts,
        engine=base_engine,
        source_path=source,
        source_text=text,
        warnings=tuple(ctx.warnings),
    )


def loads_policy(text: str, *, source_path: str | None = None) -> Policy:
    """Load a policy from its YAML text.  Raises PolicyError."""
    if len(text) > MAX_POLICY_BYTES:
        raise PolicyError(f"the policy is larger than {MAX_POLICY_BYTES} bytes", path=source_path)
    return _build(text, source_path)


def load_policy(path: str | os.PathLike[str] | None) -> Policy:
    """Load the policy at ``path``; None means Safe Mode only (see
    ``Policy.warnings`` for the warning a shell must print)."""
    if path is None:
        return safe_mode_only_policy()
    source = str(path)
    try:
        raw = Path(source).read_bytes()
    except OSError as exc:
        raise PolicyError(f"cannot read the policy: {exc.strerror or exc}", path=source) from None
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"the policy is larger than {MAX_POLICY_BYTES} bytes", path=source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(
            f"the policy is not valid UTF-8 (byte {exc.start})", path=source
        ) from None
    return _build(text, source)


_SAFE_ONLY: Policy | None = None


def safe_mode_only_policy() -> Policy:
    global _SAFE_ONLY
    if _SAFE_ONLY is None:
        model = PolicyModel(version="2", default_action="allow", safe_mode_only=True)
        _SAFE_ONLY = Policy(
            model,
            tools={},
            resources=(),
            prompts={},
            engine=SafeModeEngine(()),
            source_path=None,
            source_text=None,
            warnings=(SAFE_MODE_ONLY_WARNING,),
        )
    return _SAFE_ONLY
