"""The identity settings a policy carries (``identity:``) and the shells' knobs.

The policy helper parses the YAML and exposes ``Policy.identity``; this module
accepts that object (or a plain mapping, or an ``IdentityConfig``) through
``coerce_identity_config`` so the two parts agree on meaning without sharing a
class.  Everything here is validated once, at load time, so the hot path never
has to re-check it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from agentwall.errors import ConfigError

# Asymmetric JWS algorithms a public key set can verify.  HMAC ("HS*") needs a
# shared secret, which a public JWKS never carries: allowing it next to public
# keys is exactly the key-confusion hole, so it cannot be configured at all.
# "none" is not an algorithm.
SUPPORTED_ALGORITHMS: frozenset[str] = frozenset(
    {
        "RS256", "RS384", "RS512",
        "PS256", "PS384", "PS512",
        "ES256", "ES384", "ES512",
        "EdDSA",
    }
)  # fmt: skip

DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256", "EdDSA")


class IdentityConfig(msgspec.Struct, frozen=True):
    """What a token must satisfy.  Field names match the policy's ``identity:``."""

    issuer: str
    audience: tuple[str, ...]
    jwks_uri: str | None = None
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    # claim -> requirement.  ``True`` = present; a scalar = equal (or, for a
    # list-valued claim, contained); a list = any one of these values.
    required_claims: dict[str, Any] = msgspec.field(default_factory=dict)
    clock_skew_seconds: float = 60.0
    # Scope hierarchy (MCP 2026-07-28: "a broader scope implies narrower
    # ones"): scope -> scopes it implies, expanded transitively at verify time.
    scope_implies: dict[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    # The resource identifier clients see (RFC 9728 ``resource``); None = built
    # from the request's Host and path by the HTTP front-end.
    resource: str | None = None
    # Advertised in the protected-resource metadata (RFC 9728
    # ``scopes_supported``); optional.
    scopes_supported: tuple[str, ...] = ()


def coerce_identity_config(value: Any, *, issuer_override: str | None = None) -> IdentityConfig:
    """Accept ``Policy.identity`` in whatever shape the policy part gives it (a
    Struct or object with the documented attributes, or a mapping), validate
    it, and apply ``--oidc-issuer``.  Raises ``ConfigError`` with the field."""
    if isinstance(value, IdentityConfig):
        raw: dict[str, Any] = msgspec.structs.asdict(value)
    elif isinstance(value, Mapping):
        raw = dict(value)
    else:
        raw = {
            name: getattr(value, name)
            for name in IdentityConfig.__struct_fields__
            if hasattr(value, name)
        }
    if issuer_override is not None:
        raw["issuer"] = issuer_override
    return _validated(raw)


def _validated(raw: dict[str, Any]) -> IdentityConfig:
    unknown = set(raw) - set(IdentityConfig.__struct_fields__)
    if unknown:
        raise ConfigError(f"identity: unknown setting(s) {sorted(unknown)}")
    issuer = raw.get("issuer")
    if not isinstance(issuer, str) or not issuer:
        raise ConfigError("identity.issuer: a non-empty issuer URL is required")
    if not (issuer.startswith("https://") or issuer.startswith("http://")):
        raise ConfigError(f"identity.issuer: {issuer!r} is not an http(s) URL")
    audience = raw.get("audience")
    if isinstance(audience, str):
        audience = (audience,)
    if (
        not isinstance(audience, (list, tuple))
        or not audience
        or not all(isinstance(a, str) and a for a in audience)
    ):
        # RFC 8707 / MCP: a resource server MUST check that tokens were issued
        # for it, so an audience is not optional.
        raise ConfigError("identity.audience: one or more non-empty audience strings required")
    algorithms = raw.get("algorithms")
    if algorithms is None:
        algorithms = DEFAULT_ALGORITHMS
    if isinstance(algorithms, str):
        algorithms = (algorithms,)
    if not isinstance(algorithms, (list, tuple)) or not algorithms:
        raise ConfigError("identity.algorithms: a non-empty list of algorithms is required")
    for alg in algorithms:
        if alg not in SUPPORTED_ALGORITHMS:
            why = (
                "HMAC algorithms cannot be verified with a public key set (key confusion)"
                if isinstance(alg, str) and alg.upper().startswith("HS")
                else "'none' is never accepted"
                if isinstance(alg, str) and alg.lower() == "none"
                else f"supported: {', '.join(sorted(SUPPORTED_ALGORITHMS))}"
            )
            raise ConfigError(f"identity.algorithms: {alg!r} is not allowed; {why}")
    skew = raw.get("clock_skew_seconds", 60.0)
    if isinstance(skew, bool) or not isinstance(skew, (int, float)) or not 0 <= skew <= 600:
        raise ConfigError("identity.clock_skew_seconds: a number of seconds in 0..600")
    required = raw.get("required_claims") or {}
    if not isinstance(required, Mapping) or not all(isinstance(k, str) for k in required):
        raise ConfigError("identity.required_claims: a mapping of claim name to requirement")
    for name, want in required.items():
        if want is False or want is None or (isinstance(want, (list, tuple)) and not want):
            raise ConfigError(
                f"identity.required_claims.{name}: use true, a value, or a non-empty list"
            )
    implies = raw.get("scope_implies") or {}
    if not isinstance(implies, Mapping):
        raise ConfigError("identity.scope_implies: a mapping of scope to implied scopes")
    implied: dict[str, tuple[str, ...]] = {}
    for broad, narrow in implies.items():
        if isinstance(narrow, str):
            narrow = (narrow,)
        if not isinstance(broad, str) or not all(isinstance(n, str) for n in narrow):
            raise ConfigError(f"identity.scope_implies.{broad}: a list of scope strings")
        implied[broad] = tuple(narrow)
    jwks_uri = raw.get("jwks_uri")
    if jwks_uri is not None and (
        not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://"))
    ):
        raise ConfigError("identity.jwks_uri: an http(s) URL")
    resource = raw.get("resource")
    if resource is not None and (
        not isinstance(resource, str) or not resource.startswith(("https://", "http://"))
    ):
        raise ConfigError("identity.resource: an http(s) URL")
    supported = raw.get("scopes_supported") or ()
    if not isinstance(supported, (list, tuple)) or not all(isinstance(s, str) for s in supported):
        raise ConfigError("identity.scopes_supported: a list of scope strings")
    return IdentityConfig(
        issuer=issuer,
        audience=tuple(audience),
        jwks_uri=jwks_uri,
        algorithms=tuple(dict.fromkeys(algorithms)),
        required_claims=dict(required),
        clock_skew_seconds=float(skew),
        scope_implies=implied,
        resource=resource,
        scopes_supported=tuple(supported),
    )
