"""The issuer's public keys, by ``kid``: what was fetched, when, and until when
it may be trusted.  Pure: the shell (``agentwall.io.oidc``) fetches the bytes
and passes them, with the time, to ``JwksCache.load``.

The three mistakes this class exists to avoid (seen in the seed products):
- keys never evicted: every ``load`` replaces the set, so a key the issuer
  removed stops verifying immediately;
- unthrottled re-fetch on an unknown ``kid``: ``claim_unknown_kid_refresh``
  grants at most one refresh per interval, whatever the attacker sends;
- the algorithm taken from the token: each key carries the algorithms it may
  verify, fixed here from the allow-list and the key's own type and curve.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWKError, PyJWTError

from agentwall.core.canonical import canonical_json, sha256_hex
from agentwall.errors import KeysUnavailable, TokenInvalid, UnknownKeyId

# Which JWS algorithms a key of this kty (and curve) can verify.  An RSA key
# never verifies ES256, an EC P-384 key never verifies ES256, and no public key
# verifies HS256: that is how a header cannot pick the verification method.
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALG_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_OKP_ALG_BY_CURVE = {"Ed25519": "EdDSA"}
# Members that only a private (or symmetric) JWK has.  A public key set that
# carries them is misconfigured; we never load private material.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

MAX_KEYS = 64
MAX_JWKS_BYTES = 512 * 1024


class JwksError(Exception):
    """A key-set document that cannot be used at all (the old set is kept)."""


@dataclass(frozen=True, eq=False)
class VerificationKey:
    """One usable public key.  Compared by identity: a verified-token cache
    entry stays valid only while the cache still holds *this* object."""

    kid: str | None
    kty: str
    # alg -> the PyJWK bound to that algorithm (PyJWT verifies with the key's
    # bound algorithm, never the header's).
    by_algorithm: Mapping[str, PyJWK]
    thumbprint: str


@dataclass(frozen=True)
class KeySetChange:
    added: tuple[str | None, ...]
    removed: tuple[str | None, ...]
    kept: tuple[str | None, ...]
    # Keys in the document we could not use, with why (logged by the shell).
    skipped: tuple[tuple[str | None, str], ...] = ()


@dataclass
class JwksCache:
    """Keys by ``kid`` with fetched-at and expiry.

    ``max_age``: how long a fetched set stays usable without a successful
    refresh (the issuer being down does not stop service until then; after it,
    requests fail closed).  ``refresh_interval``: the background schedule.
    ``unknown_kid_interval``: at most one refresh per this many seconds on
    behalf of tokens whose ``kid`` is unknown.
    """

    algorithms: Sequence[str]
    max_age: float = 3600.0
    refresh_interval: float = 300.0
    unknown_kid_interval: float = 30.0
    keys: dict[str | None, VerificationKey] = field(default_factory=dict)
    fetched_at: float | None = None
    last_attempt_at: float | None = None
    last_error: str | None = None
    generation: int = 0
    _last_unknown_kid_refresh: float | None = None

    @property
    def expires_at(self) -> float | None:
        return None if self.fetched_at is None else self.fetched_at + self.max_age

    def usable(self, now: float) -> bool:
        expires = self.expires_at
        return expires is not None and now < expires

    def load(self, document: bytes | str | Mapping[str, Any], now: float) -> KeySetChange:
        """Replace the key set with ``document`` (a JWKS).  Keys missing from it
        are evicted.  Raises ``JwksError`` (keeping the old set) when the
        document is not a JWKS at all."""
        parsed = _parse_document(document)
        fresh: dict[str | None, VerificationKey] = {}
        skipped: list[tuple[str | None, str]] = []
        duplicate: set[str | None] = set()
        for entry in parsed[:MAX_KEYS]:
            kid = entry.get("kid") if isinstance(entry.get("kid"), str) else None
            try:
                key = self._usable_key(entry)
            except _Skip as skip:
                skipped.append((kid, str(skip)))
                continue
            if kid in fresh or kid in duplicate:
                # Two keys under one kid: which one a token means is ambiguous,
                # so neither is trusted.
                fresh.pop(kid, None)
                duplicate.add(kid)
                skipped.append((kid, "duplicate kid; both copies ignored"))
                continue
            previous = self.keys.get(kid)
            fresh[kid] = previous if previous and previous.thumbprint == key.thumbprint else key
        if len(parsed) > MAX_KEYS:
            skipped.append((None, f"{len(parsed) - MAX_KEYS} keys beyond the first {MAX_KEYS}"))
        old = self.keys
        change = KeySetChange(
            added=tuple(k for k in fresh if old.get(k) is not fresh[k]),
            removed=tuple(k for k in old if fresh.get(k) is not old[k]),
            kept=tuple(k for k in fresh if old.get(k) is fresh[k]),
            skipped=tuple(skipped),
        )
        self.keys = fresh
        self.fetched_at = now
        self.last_attempt_at = now
        self.last_error = None
        if change.added or change.removed:
            self.generation += 1
        return change

    def fetch_failed(self, now: float, error: str) -> None:
        """Record a failed fetch; the cached keys stay until they expire."""
        self.last_attempt_at = now
        self.last_error = error

    def next_refresh_at(self) -> float:
        """When the background schedule should fetch next (0 = now)."""
        if self.fetched_at is None:
            return 0.0
        return self.fetched_at + self.refresh_interval

    def claim_unknown_kid_refresh(self, now: float) -> bool:
        """May a token with an unknown kid trigger a refresh now?  Grants one
        per ``unknown_kid_interval``, recording the grant, so a flood of random
        kids costs the issuer at most one request per interval."""
        last = self._last_unknown_kid_refresh
        if last is not None and 0 <= now - last < self.unknown_kid_interval:
            return False
        self._last_unknown_kid_refresh = now
        return True

    def key_for(self, kid: str | None, now: float) -> VerificationKey:
        """The key a token header names.  Raises ``KeysUnavailable`` when there
        is no usable set, ``UnknownKeyId`` when the set lacks the kid."""
        if not self.usable(now):
            if self.fetched_at is None:
                raise KeysUnavailable("the identity provider's keys have not been fetched yet")
            raise KeysUnavailable(
                "the identity provider's keys expired and could not be refreshed"
                + (f" ({self.last_error})" if self.last_error else "")
            )
        if kid is None:
            # Some issuers omit kid when they have one key.  With several keys
            # a kid-less token is ambiguous, and trying each key would let the
            # token choose: refuse instead.
            if len(self.keys) == 1:
                return next(iter(self.keys.values()))
            raise TokenInvalid(
                f"token has no kid and the key set has {len(self.keys)} keys",
                reason="missing_kid",
            )
        key = self.keys.get(kid)
        if key is None:
            raise UnknownKeyId(f"no key with kid {kid!r} in the issuer's key set", kid=kid)
        return key

    def _usable_key(self, entry: Mapping[str, Any]) -> VerificationKey:
        kty = entry.get("kty")
        if not isinstance(kty, str):
            raise _Skip("no kty")
        private = _PRIVATE_MEMBERS.intersection(entry)
        if private:
            raise _Skip(f"private or symmetric key material ({', '.join(sorted(private))})")
        use = entry.get("use")
        if use is not None and use != "sig":
            raise _Skip(f"use is {use!r}, not 'sig'")
        ops = entry.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            raise _Skip("key_ops does not include 'verify'")
        crv = entry.get("crv")
        if kty == "RSA":
            compatible = _RSA_ALGS
        elif kty == "EC" and crv in _EC_ALG_BY_CURVE:
            compatible = frozenset({_EC_ALG_BY_CURVE[crv]})
        elif kty == "OKP" and crv in _OKP_ALG_BY_CURVE:
            compatible = frozenset({_OKP_ALG_BY_CURVE[crv]})
        else:
            raise _Skip(f"unsupported key type {kty}/{crv}")
        declared = entry.get("alg")
        if declared is not None:
            # A key that declares its algorithm verifies only that one.
            compatible = compatible & {declared}
        allowed = [alg for alg in self.algorithms if alg in compatible]
        if not allowed:
            raise _Skip(
                f"{kty} key"
                + (f" with alg {declared}" if declared else "")
                + f" matches none of the allowed algorithms {list(self.algorithms)}"
            )
        public = {k: v for k, v in entry.items() if k not in ("alg", "key_ops", "use")}
        by_algorithm: dict[str, PyJWK] = {}
        for alg in allowed:
            try:
                by_algorithm[alg] = PyJWK(dict(public), algorithm=alg)
            except (PyJWKError, PyJWTError, ValueError, TypeError) as exc:
                raise _Skip(f"unreadable key: {exc}") from None
        kid = entry.get("kid")
        return VerificationKey(
            kid=kid if isinstance(kid, str) else None,
            kty=kty,
            by_algorithm=by_algorithm,
            thumbprint=sha256_hex(canonical_json({**public, "algs": allowed})),
        )


class _Skip(Exception):
    pass


def _parse_document(document: bytes | str | Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if isinstance(document, (bytes, str)):
        if len(document) > MAX_JWKS_BYTES:
            raise JwksError(f"key set larger than {MAX_JWKS_BYTES} bytes")
        try:
            document = json.loads(document)
        except (ValueError, UnicodeDecodeError) as exc:
            raise JwksError(f"key set is not JSON: {exc}") from None
    if not isinstance(document, Mapping):
        raise JwksError("key set is not a JSON object")
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise JwksError("key set has no 'keys' array")
    return [entry for entry in keys if isinstance(entry, Mapping)]
