from __future__ import annotations

import pytest
from oidc_testkit import ec_key, ed25519_key, rsa_key

from agentwall.errors import KeysUnavailable, TokenInvalid, UnknownKeyId
from agentwall.identity import JwksCache, JwksError

ALGS = ("RS256", "ES256", "EdDSA")
RSA, EC, ED = rsa_key("r"), ec_key("e"), ed25519_key("d")


def test_load_and_lookup() -> None:
    cache = JwksCache(ALGS)
    change = cache.load({"keys": [RSA.public_jwk, EC.public_jwk, ED.public_jwk]}, 100.0)
    assert set(change.added) == {"r", "e", "d"}
    assert cache.key_for("e", 100.0).kty == "EC"
    assert set(cache.key_for("r", 100.0).by_algorithm) == {"RS256"}
    assert cache.fetched_at == 100.0
    assert cache.expires_at == 3700.0


def test_refresh_evicts_removed_keys_and_keeps_unchanged_objects() -> None:
    cache = JwksCache(ALGS)
    cache.load({"keys": [RSA.public_jwk, EC.public_jwk]}, 0.0)
    kept = cache.key_for("e", 0.0)
    change = cache.load({"keys": [EC.public_jwk, ED.public_jwk]}, 10.0)
    assert change.removed == ("r",)
    assert change.added == ("d",)
    assert change.kept == ("e",)
    assert cache.key_for("e", 10.0) is kept
    with pytest.raises(UnknownKeyId):
        cache.key_for("r", 10.0)


def test_malformed_document_keeps_old_set() -> None:
    cache = JwksCache(ALGS)
    cache.load({"keys": [RSA.public_jwk]}, 0.0)
    for bad in (b"not json", b"[]", b'{"keys": 3}', b"{}"):
        with pytest.raises(JwksError):
            cache.load(bad, 1.0)
    assert cache.key_for("r", 1.0).kid == "r"


@pytest.mark.parametrize(
    ("jwk_change", "why"),
    [
        ({"d": "AAAA"}, "private"),
        ({"use": "enc"}, "use"),
        ({"key_ops": ["encrypt"]}, "key_ops"),
        ({"kty": "oct", "k": "c2VjcmV0"}, "private or symmetric"),
        ({"alg": "RS512"}, "matches none"),
        ({"kty": "XYZ"}, "unsupported"),
    ],
)
def test_unusable_keys_are_skipped_with_reason(jwk_change: dict[str, str], why: str) -> None:
    cache = JwksCache(ALGS)
    change = cache.load({"keys": [{**RSA.public_jwk, **jwk_change}, EC.public_jwk]}, 0.0)
    assert [kid for kid, _ in change.skipped] == ["r"]
    assert why in change.skipped[0][1]
    assert set(cache.keys) == {"e"}


def test_duplicate_kid_trusts_neither() -> None:
    other = rsa_key("r")
    cache = JwksCache(ALGS)
    change = cache.load({"keys": [RSA.public_jwk, other.public_jwk, EC.public_jwk]}, 0.0)
    assert "r" not in cache.keys
    assert any("duplicate" in why for _, why in change.skipped)


def test_expiry_fails_closed() -> None:
    cache = JwksCache(ALGS, max_age=60.0)
    with pytest.raises(KeysUnavailable, match="not been fetched"):
        cache.key_for("r", 0.0)
    cache.load({"keys": [RSA.public_jwk]}, 0.0)
    cache.fetch_failed(30.0, "connection refused")
    assert cache.key_for("r", 59.9).kid == "r"
    with pytest.raises(KeysUnavailable, match="connection refused"):
        cache.key_for("r", 60.0)


def test_unknown_kid_refresh_is_rate_limited() -> None:
    cache = JwksCache(ALGS, unknown_kid_interval=30.0)
    grants = [cache.claim_unknown_kid_refresh(t) for t in (0.0, 0.1, 5.0, 29.9, 30.0, 31.0, 61.0)]
    assert grants == [True, False, False, False, True, False, True]


def test_kidless_lookup() -> None:
    cache = JwksCache(ALGS)
    cache.load({"keys": [RSA.public_jwk]}, 0.0)
    assert cache.key_for(None, 0.0).kid == "r"
    cache.load({"keys": [RSA.public_jwk, EC.public_jwk]}, 1.0)
    with pytest.raises(TokenInvalid, match="no kid"):
        cache.key_for(None, 1.0)


def test_key_count_is_capped() -> None:
    cache = JwksCache(ALGS)
    jwks = {"keys": [{**EC.public_jwk, "kid": f"k{i}"} for i in range(80)]}
    change = cache.load(jwks, 0.0)
    assert len(cache.keys) == 64
    assert any("beyond" in why for _, why in change.skipped)
