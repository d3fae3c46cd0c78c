"""The public, typed form of a loaded policy.

These frozen Structs are what the loader produces and what other parts read:
``promote`` inspects tools, risks, patterns and identity rules; the proxy reads
rates and the identity configuration.  They hold no compiled state (that lives
in ``agentwall.policy.compiled``), so they can be compared, encoded and hashed.
Every default is filled in by the loader, so two files that mean the same
thing produce equal models and therefore the same content hash.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Action = Literal["allow", "deny"]
Risk = Literal["low", "medium", "high", "critical"]
ParamType = Literal["string", "integer", "number", "boolean", "object", "array"]

ACTIONS: tuple[str, ...] = ("allow", "deny")
RISKS: tuple[str, ...] = ("low", "medium", "high", "critical")
PARAM_TYPES: tuple[str, ...] = ("string", "integer", "number", "boolean", "object", "array")

# Signature algorithms a policy may allow for identity tokens.  "none" and the
# HMAC family are absent on purpose: a verifier holding public keys must never
# accept a MAC made with one as the secret (key confusion).
JWT_ALGORITHMS: tuple[str, ...] = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
DEFAULT_JWT_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256", "EdDSA")

DEFAULT_MAX_DEPTH = 64
DEFAULT_MAX_BYTES = 1024 * 1024


class RateLimit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A token bucket: ``calls_per_second`` refill, ``burst`` capacity
    (None = the proxy's default, one second's worth)."""

    calls_per_second: float
    burst: int | None = None


class IdentityConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Top-level ``identity:``: how tokens are verified (issue 6)."""

    issuer: str
    # One audience, or several (a token's aud must contain at least one).  A
    # one-item list is stored as the plain string: the same meaning, the
    # same content hash.
    audience: str | tuple[str, ...]
    jwks_uri: str | None = None
    algorithms: tuple[str, ...] = DEFAULT_JWT_ALGORITHMS
    # claim -> the values it must have (any one of them; for a list-valued
    # claim, any overlap).  Checked by the verifier for every token.
    required_claims: dict[str, tuple[str | int | bool, ...]] = msgspec.field(default_factory=dict)
    clock_skew_seconds: int = 60
    # Scope hierarchy (MCP 2026-07-28): a granted scope also grants the
    # scopes it lists, transitively; expanded by the verifier.
    scope_implies: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    # RFC 9728 resource identifier (None: built from the request's Host).
    resource: str | None = None
    # Advertised in the protected-resource metadata document.
    scopes_supported: tuple[str, ...] = ()


class IdentityRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per-tool (or resource/prompt) ``identity:``.  Every part given must hold:
    the subject is one of ``subjects``; each claim has one of its listed values
    (any overlap for list claims such as groups); every scope is granted."""

    subjects: tuple[str, ...] = ()
    claims: dict[str, tuple[str | int | bool, ...]] = msgspec.field(default_factory=dict)
    scopes: tuple[str, ...] = ()


class ParameterRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    type: ParamType | None = None
    required: bool = False
    description: str | None = None
    # Strings.  ``pattern`` is the source as written; it is matched as
    # ^(?:pattern)$ with RE2 against the exact string the upstream receives.
    pattern: str | None = None
    max_length: int | None = None
    min_length: int | None = None
    within: tuple[str, ...] | None = None
    # Any scalar type; compared by type and value (true is not 1).
    enum: tuple[str | int | float | bool, ...] | None = None
    # Numbers.
    minimum: int | float | None = None
    maximum: int | float | None = None
    # Arrays: bounds on the number of items, and a rule every item must meet
    # (its name is "<parameter>[]").
    max_items: int | None = None
    min_items: int | None = None
    items: ParameterRule | None = None
    # JSON Schema for the value, with additionalProperties: false injected
    # wherever an object schema names none (the form that is enforced).
    schema: dict[str, Any] | None = None


class SafeModeOverride(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    disable: tuple[str, ...] = ()


class ToolRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    action: Action
    risk: Risk | None = None
    description: str | None = None
    # None: the tool declares no parameters and accepts any arguments.
    # (): it declares that it takes none.
    parameters: tuple[ParameterRule, ...] | None = None
    additional_parameters: Action = "deny"
    identity: IdentityRule | None = None
    rate_limit: RateLimit | None = None
    safe_mode: SafeModeOverride = SafeModeOverride()


class ResourceRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``resources:`` entry for ``resources/read`` (and subscribe).  ``uri`` is an
    anchored RE2 pattern over the exact URI; ``within`` (optional) further
    requires a ``file://`` URI whose normalised path stays inside a root."""

    uri: str
    action: Action
    risk: Risk | None = None
    description: str | None = None
    within: tuple[str, ...] | None = None
    identity: IdentityRule | None = None


class PromptRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    action: Action
    risk: Risk | None = None
    description: str | None = None
    arguments: tuple[ParameterRule, ...] | None = None
    additional_arguments: Action = "deny"
    identity: IdentityRule | None = None


class SessionConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_calls_per_second: float | None = None
    burst: int | None = None


class ClientConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Top-level ``client:``: one token bucket per client (the verified
    identity, else the peer address; for ``wrap``, its one agent) across all
    of that client's sessions, so a fresh ``initialize`` buys no new tokens."""

    max_calls_per_second: float
    burst: int | None = None


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_depth: int = DEFAULT_MAX_DEPTH
    max_bytes: int = DEFAULT_MAX_BYTES
    # Applies to every string in the params when set; a parameter's own
    # max_length is checked as well.
    max_string_length: int | None = None


class SafeModeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    disable: tuple[str, ...] = ()
    # Hosts, IP addresses or CIDR ranges that the private-network rule
    # (safe_mode.ssrf.private_network) lets through, e.g. "127.0.0.1/32",
    # "localhost", "10.0.0.0/8".  Cloud metadata addresses stay blocked.
    allow_private: tuple[str, ...] = ()


class PolicyModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: str
    default_action: Action
    description: str | None = None
    identity: IdentityConfig | None = None
    session: SessionConfig = SessionConfig()
    # None (absent): no per-client limit.  Left out of the content hash when
    # absent, so policies written before it keep their hash and signature.
    client: ClientConfig | None = None
    limits: Limits = Limits()
    safe_mode: SafeModeConfig = SafeModeConfig()
    # Explicit entries from the file only; the shipped defaults are in
    # ``agentwall.policy.methods`` and apply where the file says nothing.
    methods: dict[str, Action] = msgspec.field(default_factory=dict)
    tools: tuple[ToolRule, ...] = ()
    resources: tuple[ResourceRule, ...] = ()
    prompts: tuple[PromptRule, ...] = ()
    # True only for the built-in "no policy given" model.
    safe_mode_only: bool = False
