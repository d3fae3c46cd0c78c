"""Per-tool identity rules, for the policy's ``evaluate`` and ``filter_tools_list``.

```yaml
tools:
  - name: deploy
    action: allow
    identity: {subjects: [alice], claims: {groups: [release]}, scopes: [deploy:write]}
```

Semantics (all listed conditions must hold):
- ``subjects``: the caller's ``sub`` is one of these;
- ``claims``: for each claim, the caller's value matches one of the listed
  values (a list-valued claim such as ``groups`` matches when it contains one);
  ``true`` means the claim is present;
- ``scopes``: the caller holds every listed scope (after the configured scope
  hierarchy is expanded).

A call without a verified identity never satisfies a rule that has one.
The policy part turns an ``IdentityRefusal`` into a deny ``Decision`` with
``category`` set to the refusal's category; the HTTP front-end maps
``identity_scope``/``identity_claims`` to 403 + ``insufficient_scope`` (RFC 6750)
and the rest to a JSON-RPC error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol

import msgspec

from agentwall.errors import ConfigError
from agentwall.identity.claims import claim_matches
from agentwall.types import Identity

# Decision.category values for identity refusals.
CATEGORY_IDENTITY_REQUIRED: Final = "identity_required"
CATEGORY_IDENTITY_SUBJECT: Final = "identity_subject"
CATEGORY_IDENTITY_CLAIMS: Final = "identity_claims"
CATEGORY_IDENTITY_SCOPE: Final = "identity_scope"
# Categories a better token could fix: answered 403 insufficient_scope.
STEP_UP_CATEGORIES: frozenset[str] = frozenset({CATEGORY_IDENTITY_SCOPE, CATEGORY_IDENTITY_CLAIMS})


class IdentityRule(msgspec.Struct, frozen=True):
    subjects: tuple[str, ...] = ()
    claims: dict[str, Any] = msgspec.field(default_factory=dict)
    scopes: tuple[str, ...] = ()


class IdentityRuleLike(Protocol):
    """Ours or the policy model's ``IdentityRule``: same three fields."""

    @property
    def subjects(self) -> tuple[str, ...]: ...
    @property
    def claims(self) -> Mapping[str, Any]: ...
    @property
    def scopes(self) -> tuple[str, ...]: ...


class IdentityRefusal(msgspec.Struct, frozen=True):
    category: str
    # Safe to show the caller: names what is missing, never echoes claim values.
    reason: str
    # For identity_scope: every scope the call needs (one challenge with all of
    # them, as MCP 2026-07-28 asks), for the 403's ``scope`` parameter.
    required_scopes: tuple[str, ...] = ()


def parse_identity_rule(value: Any, *, where: str = "identity") -> IdentityRule:
    """Validate a rule's ``identity:`` mapping (the policy part may call this
    from its loader, adding file:line to the ``ConfigError``)."""
    if isinstance(value, IdentityRule):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: a mapping with subjects, claims and/or scopes")
    unknown = set(value) - {"subjects", "claims", "scopes"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    subjects = _strings(value.get("subjects", ()), f"{where}.subjects")
    scopes = _strings(value.get("scopes", ()), f"{where}.scopes")
    if any(" " in scope or '"' in scope or "\\" in scope for scope in scopes):
        # RFC 6749 3.3: a scope token has no spaces (nor quotes or
        # backslashes, which the 403 challenge could not carry).
        raise ConfigError(f"{where}.scopes: one scope per list item, without spaces or quotes")
    claims = value.get("claims") or {}
    if not isinstance(claims, Mapping) or not all(isinstance(k, str) for k in claims):
        raise ConfigError(f"{where}.claims: a mapping of claim name to value(s)")
    for name, want in claims.items():
        if want is False or want is None or (isinstance(want, (list, tuple)) and not want):
            raise ConfigError(f"{where}.claims.{name}: use true, a value, or a non-empty list")
    if not (subjects or scopes or claims):
        # An empty rule would read as "identity required" to one person and
        # "no condition" to another; make the author say which.
        raise ConfigError(f"{where}: empty identity rule; list subjects, claims or scopes")
    return IdentityRule(subjects=subjects, claims=dict(claims), scopes=scopes)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: a list of non-empty strings")
    return tuple(value)


def check_identity_rule(
    rule: IdentityRuleLike, identity: Identity | None
) -> IdentityRefusal | None:
    """None when ``identity`` satisfies ``rule``; otherwise why not."""
    if identity is None:
        return IdentityRefusal(
            category=CATEGORY_IDENTITY_REQUIRED,
            reason="this tool requires an authenticated caller",
            required_scopes=rule.scopes,
        )
    if rule.subjects and identity.subject not in rule.subjects:
        return IdentityRefusal(
            category=CATEGORY_IDENTITY_SUBJECT,
            reason="caller is not among the subjects allowed for this tool",
        )
    if rule.scopes:
        held = set(identity.scopes)
        missing = [s for s in rule.scopes if s not in held]
        if missing:
            return IdentityRefusal(
                category=CATEGORY_IDENTITY_SCOPE,
                reason=f"missing scope(s): {' '.join(missing)}",
                required_scopes=rule.scopes,
            )
    unmet = sorted(
        name
        for name, want in rule.claims.items()
        if not claim_matches(identity.claims.get(name), want)
    )
    if unmet:
        return IdentityRefusal(
            category=CATEGORY_IDENTITY_CLAIMS,
            reason=f"missing or non-matching claim(s): {', '.join(unmet)}",
            required_scopes=rule.scopes,
        )
    return None


def claims_looked_at(rules: Iterable[IdentityRuleLike]) -> tuple[frozenset[str], bool]:
    """The claim names and whether subjects matter, over a policy's rules: what
    ``TokenVerifier(class_claims=..., subject_in_class=...)`` should keep."""
    names: set[str] = set()
    subjects = False
    for rule in rules:
        names.update(rule.claims)
        subjects = subjects or bool(rule.subjects)
    return frozenset(names), subjects
