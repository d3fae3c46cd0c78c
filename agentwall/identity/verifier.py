"""``TokenVerifier.verify(token, now) -> Identity``: a JWT access token checked
the way OAuth 2.1 section 5.2 and MCP's authorization chapter ask.

Pure and synchronous: the key set is handed in (``JwksCache``), the time is
passed in, and an unknown ``kid`` raises ``UnknownKeyId`` for the I/O shell to
decide whether a (rate-limited) refresh is due before it asks again.

Order of checks, cheapest and least trusting first:
1. size and shape (three base64url segments) -- no crypto for junk;
2. the header: ``alg`` must be one the *key* may verify (fixed from the
   allow-list and the key's type when the key set was loaded), so ``none``,
   ``HS256`` under an RSA key, or ``ES256`` under an RSA key are refused
   before any signature work;
3. the signature (PyJWT + cryptography, with the key's bound algorithm);
4. ``iss``, ``aud`` (PyJWT), then ``exp``/``nbf``/``iat`` against the
   passed-in clock with the configured skew, then ``required_claims``.

Verified tokens are cached by SHA-256 of the token until ``exp`` (+ skew) or
until the key that verified them leaves the key set, whichever comes first; a
hit costs a hash, a dict lookup and three comparisons.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Iterable
from typing import Any

import jwt
from jwt.exceptions import (
    DecodeError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTokenError,
    MissingRequiredClaimError,
    PyJWTError,
)

from agentwall.errors import InsufficientScope, TokenInvalid
from agentwall.identity.claims import claims_class, kept_claims, token_scopes, unmet_claims
from agentwall.identity.config import IdentityConfig
from agentwall.identity.jwks import JwksCache, KeySetChange, VerificationKey
from agentwall.types import Identity

MAX_TOKEN_BYTES = 16 * 1024
_B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")

# PyJWT checks signature, iss, aud and presence; time is ours (the clock is
# passed in, PyJWT would read the wall clock).
_PYJWT_OPTIONS: Any = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": True,
    "verify_iss": True,
    "verify_sub": True,
    "verify_jti": True,
    "require": ["exp", "iss", "aud", "sub"],
}


class _Verified:
    __slots__ = ("identity", "key", "not_after", "not_before")

    def __init__(
        self, identity: Identity, key: VerificationKey, not_before: float, not_after: float
    ) -> None:
        self.identity = identity
        self.key = key
        self.not_before = not_before
        self.not_after = not_after


class TokenVerifier:
    """Verifies bearer tokens against one issuer's keys and one audience.

    ``class_claims``: the claim names identity rules look at (None = all
    non-volatile claims); ``subject_in_class``: whether any rule names
    subjects.  Both only narrow ``Identity.claims_class`` so callers who no
    rule can tell apart share decision-cache entries.
    """

    def __init__(
        self,
        config: IdentityConfig,
        jwks: JwksCache | None = None,
        *,
        class_claims: Iterable[str] | None = None,
        subject_in_class: bool = True,
        cache_size: int = 10_000,
    ) -> None:
        self.config = config
        self.jwks = jwks if jwks is not None else JwksCache(config.algorithms)
        self._class_claims = None if class_claims is None else frozenset(class_claims)
        self._subject_in_class = subject_in_class
        self._cache: dict[bytes, _Verified] = {}
        self._cache_size = cache_size
        self._leeway = config.clock_skew_seconds
        self.hits = 0
        self.misses = 0

    # -- key set -----------------------------------------------------------

    def load_jwks(self, document: Any, now: float) -> KeySetChange:
        """Load a fetched key set and drop cached tokens whose key went away.
        (The hit path also re-checks the key, so this is about memory, not
        correctness.)"""
        change = self.jwks.load(document, now)
        if change.removed:
            current = self.jwks.keys
            stale = [
                digest
                for digest, entry in self._cache.items()
                if current.get(entry.key.kid) is not entry.key
            ]
            for digest in stale:
                del self._cache[digest]
        return change

    # -- verification ------------------------------------------------------

    def verify(self, token: str | bytes, now: float) -> Identity:
        raw = token.encode("ascii", "replace") if isinstance(token, str) else token
        digest = hashlib.sha256(raw).digest()
        hit = self._cache.get(digest)
        if hit is not None:
            jwks = self.jwks
            if (
                hit.not_before <= now < hit.not_after
                and jwks.keys.get(hit.key.kid) is hit.key
                and jwks.usable(now)
            ):
                self.hits += 1
                return hit.identity
            del self._cache[digest]
        self.misses += 1
        entry = self._verify_uncached(raw, now)
        if self._cache_size <= 0:
            return entry.identity
        if len(self._cache) >= self._cache_size:
            # Oldest insertion first: dicts keep order, so this is O(1).
            del self._cache[next(iter(self._cache))]
        self._cache[digest] = entry
        return entry.identity

    def _verify_uncached(self, raw: bytes, now: float) -> _Verified:
        if not raw:
            raise TokenInvalid("empty token", reason="malformed")
        if len(raw) > MAX_TOKEN_BYTES:
            raise TokenInvalid(f"token longer than {MAX_TOKEN_BYTES} bytes", reason="malformed")
        if raw.count(b".") != 2 or not _B64URL.issuperset(raw.replace(b".", b"")):
            raise TokenInvalid(
                "token is not a compact JWS (three base64url parts)", reason="malformed"
            )
        header = _read_header(raw)
        alg = header.get("alg")
        kid = header.get("kid")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise TokenInvalid(
                "unsigned tokens (alg none) are never accepted", reason="alg_not_allowed"
            )
        if alg not in self.config.algorithms:
            raise TokenInvalid(
                f"algorithm {alg} is not in the allow-list", reason="alg_not_allowed"
            )
        if "b64" in header or "jku" in header or "x5u" in header or "jwk" in header:
            # Keys come from the configured issuer only, never from the token.
            raise TokenInvalid("token header carries key or encoding overrides", reason="malformed")
        key = self.jwks.key_for(kid if isinstance(kid, str) else None, now)
        bound = key.by_algorithm.get(alg)
        if bound is None:
            # The textbook key confusion: HS256 (or any other algorithm) under a
            # key that cannot verify it.  Refused before any crypto.
            raise TokenInvalid(
                f"algorithm {alg} is not valid for key {key.kid!r} ({key.kty})",
                reason="alg_not_allowed",
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                raw,
                key=bound,
                algorithms=[alg],
                audience=list(self.config.audience),
                issuer=self.config.issuer,
                options=_PYJWT_OPTIONS,
            )
        except InvalidSignatureError:
            raise TokenInvalid("signature does not verify", reason="bad_signature") from None
        except InvalidIssuerError:
            raise TokenInvalid(
                "token was issued by another issuer", reason="wrong_issuer"
            ) from None
        except InvalidAudienceError:
            raise TokenInvalid(
                "token was not issued for this audience", reason="wrong_audience"
            ) from None
        except MissingRequiredClaimError as exc:
            raise TokenInvalid(
                f"token lacks the {exc.claim!r} claim", reason="missing_claim"
            ) from None
        except InvalidAlgorithmError as exc:
            raise TokenInvalid(f"algorithm refused: {exc}", reason="alg_not_allowed") from None
        except (DecodeError, InvalidTokenError, PyJWTError, ValueError, TypeError) as exc:
            raise TokenInvalid(f"token does not verify: {exc}", reason="malformed") from None
        not_before, not_after = self._check_times(claims, now)
        unmet = unmet_claims(claims, self.config.required_claims)
        if unmet:
            raise InsufficientScope(
                f"token does not carry the required claim(s) {', '.join(unmet)}",
                reason="required_claims",
            )
        return _Verified(self._identity(claims), key, not_before, not_after)

    def _check_times(self, claims: dict[str, Any], now: float) -> tuple[float, float]:
        leeway = self._leeway
        exp = _numeric_date(claims, "exp")
        assert exp is not None  # required above
        if now >= exp + leeway:
            raise TokenInvalid("token has expired", reason="expired")
        nbf = _numeric_date(claims, "nbf")
        if nbf is not None and now < nbf - leeway:
            raise TokenInvalid("token is not valid yet (nbf)", reason="not_yet_valid")
        iat = _numeric_date(claims, "iat")
        if iat is not None and now < iat - leeway:
            raise TokenInvalid("token was issued in the future (iat)", reason="not_yet_valid")
        starts = max(nbf if nbf is not None else -math.inf, iat if iat is not None else -math.inf)
        return starts - leeway, exp + leeway

    def _identity(self, claims: dict[str, Any]) -> Identity:
        scopes = token_scopes(claims, self.config.scope_implies)
        kept = kept_claims(claims, self._class_claims)
        subject: str = claims["sub"]
        issuer: str = claims["iss"]
        return Identity(
            subject=subject,
            issuer=issuer,
            scopes=scopes,
            claims=kept,
            claims_class=claims_class(
                issuer, subject if self._subject_in_class else None, scopes, kept
            ),
        )

    def cache_len(self) -> int:
        return len(self._cache)


def _read_header(raw: bytes) -> dict[str, Any]:
    # Only the header segment: jwt.get_unverified_header would decode (and
    # character-check in Python) all three segments, a third of a miss's cost,
    # and PyJWT decodes them again when it verifies.
    segment = raw[: raw.index(b".")]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        raise TokenInvalid("unreadable token header", reason="malformed") from None
    if not isinstance(header, dict):
        raise TokenInvalid("token header is not a JSON object", reason="malformed")
    return header


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TokenInvalid(f"the {name!r} claim is not a NumericDate", reason="malformed")
    return float(value)
