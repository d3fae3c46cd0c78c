"""Claims -> what policy sees: scopes, the claims kept on ``Identity``, and the
``claims_class`` digest that goes into the decision-cache key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agentwall.core.canonical import canonical_json, sha256_hex

# Registered claims that change from token to token for the same principal.
# Keeping them out of ``Identity.claims`` keeps ``claims_class`` stable across
# token renewals (so the decision cache keeps hitting) and keeps the record
# that crosses to the workers small.
VOLATILE_CLAIMS: frozenset[str] = frozenset(
    {"exp", "nbf", "iat", "jti", "auth_time", "nonce", "at_hash", "c_hash", "sid", "uti", "rh"}
)
# Kept on Identity as first-class fields, not in ``claims``.
_FIRST_CLASS = frozenset({"iss", "sub", "scope", "scp"})


def token_scopes(
    claims: Mapping[str, Any], implies: Mapping[str, tuple[str, ...]]
) -> tuple[str, ...]:
    """Scopes from ``scope`` (RFC 8693/9068: space-delimited string) and
    ``scp`` (list or string, as some providers send), expanded through the
    configured hierarchy, sorted and unique."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(part for part in value.split(" ") if part)
        elif isinstance(value, list):
            found.update(item for item in value if isinstance(item, str) and item)
    if implies:
        pending = list(found)
        while pending:
            for narrower in implies.get(pending.pop(), ()):
                if narrower not in found:
                    found.add(narrower)
                    pending.append(narrower)
    return tuple(sorted(found))


def kept_claims(claims: Mapping[str, Any], names: frozenset[str] | None) -> dict[str, Any]:
    """The claims carried on ``Identity``: the named ones when the policy says
    which it looks at, otherwise every non-volatile one."""
    if names is not None:
        return {name: claims[name] for name in sorted(names) if name in claims}
    return {
        name: value
        for name, value in sorted(claims.items())
        if name not in VOLATILE_CLAIMS and name not in _FIRST_CLASS
    }


def claims_class(
    issuer: str, subject: str | None, scopes: tuple[str, ...], claims: Mapping[str, Any]
) -> str:
    """Stable digest of everything an identity rule can look at.  Two callers
    share a decision-cache entry only when no rule could tell them apart.
    ``subject`` is None when no rule in the policy names subjects."""
    return sha256_hex(
        canonical_json({"iss": issuer, "sub": subject, "scopes": list(scopes), "claims": claims})
    )


def claim_matches(value: Any, want: Any) -> bool:
    """One claim requirement.  ``True`` = present.  A list = any of these
    values.  A scalar = equal, or contained when the claim is a list (groups,
    roles).  Comparison is by JSON value: 1 and "1" differ, true and 1 differ."""
    if want is True:
        return value is not None
    wanted = want if isinstance(want, (list, tuple)) else (want,)
    have = value if isinstance(value, list) else (value,)
    return any(_same(h, w) for h in have for w in wanted)


def _same(a: Any, b: Any) -> bool:
    # bool is an int in Python; a claim of true must not satisfy 1.
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def unmet_claims(claims: Mapping[str, Any], required: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(
        sorted(name for name, want in required.items() if not claim_matches(claims.get(name), want))
    )


def claim_names(required: Iterable[str], *more: Iterable[str]) -> frozenset[str]:
    names: set[str] = set(required)
    for group in more:
        names.update(group)
    return frozenset(names)
