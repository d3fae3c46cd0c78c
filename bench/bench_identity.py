"""Cost per call of token verification with warm keys: a cache miss (full
PyJWT + cryptography verification) against the verified-token cache hit.

Run:  .venv/bin/python -m pytest bench/bench_identity.py --benchmark-enable -q
Report medians and ratios (the machine is shared and noisy), not absolutes.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from agentwall.identity import TokenVerifier, authenticate, coerce_identity_config

ISSUER = "https://auth.example.test"
AUDIENCE = "agentwall-proxy"
NOW = time.time()


def _keys() -> dict[str, tuple[str, Any, dict[str, Any]]]:
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    e = ec.generate_private_key(ec.SECP256R1())
    d = ed25519.Ed25519PrivateKey.generate()
    return {
        "RS256": ("k-rs", r, RSAAlgorithm.to_jwk(r.public_key(), as_dict=True)),
        "ES256": ("k-es", e, ECAlgorithm.to_jwk(e.public_key(), as_dict=True)),
        "EdDSA": ("k-ed", d, OKPAlgorithm.to_jwk(d.public_key(), as_dict=True)),
    }


KEYS = _keys()
JWKS = {"keys": [{**jwk, "kid": kid, "alg": alg} for alg, (kid, _, jwk) in KEYS.items()]}
CONFIG = coerce_identity_config(
    {"issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256", "ES256", "EdDSA"]}
)


def _token(alg: str) -> str:
    kid, private, _ = KEYS[alg]
    payload = {
        "iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "iat": int(NOW), "nbf": int(NOW),
        "exp": int(NOW) + 3600, "scope": "tools:read deploy:write", "groups": ["release"],
    }  # fmt: skip
    return jwt.encode(payload, private, algorithm=alg, headers={"kid": kid})


def _verifier(cache_size: int) -> TokenVerifier:
    verifier = TokenVerifier(CONFIG, cache_size=cache_size)
    verifier.load_jwks(JWKS, NOW)
    return verifier


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_verify_miss(benchmark: Any, alg: str) -> None:
    verifier = _verifier(cache_size=0)  # every call is a full verification
    token = _token(alg)
    identity = benchmark(verifier.verify, token, NOW)
    assert identity.subject == "alice"
    assert verifier.hits == 0


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_verify_hit(benchmark: Any, alg: str) -> None:
    verifier = _verifier(cache_size=10_000)
    token = _token(alg)
    verifier.verify(token, NOW)
    identity = benchmark(verifier.verify, token, NOW)
    assert identity.subject == "alice"
    assert verifier.misses == 1


def test_authenticate_header_hit(benchmark: Any) -> None:
    # What the HTTP front-end pays per request: header parse + cache hit.
    verifier = _verifier(cache_size=10_000)
    header = "Bearer " + _token("ES256")
    authenticate(verifier, header, NOW, resource_metadata=None)
    result = benchmark(authenticate, verifier, header, NOW, resource_metadata=None)
    assert getattr(result, "subject", None) == "alice"
