"""TokenVerifier against real keys and real signatures (no HTTP here: the key
set is loaded directly; the fetching shell is tested in test_oidc.py)."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oidc_testkit import (
    AUDIENCE,
    SigningKey,
    claims,
    ec_key,
    ed25519_key,
    forge,
    forge_hs256_with_public_key,
    rsa_key,
    sign,
)

from agentwall.errors import (
    IdentityError,
    InsufficientScope,
    KeysUnavailable,
    TokenInvalid,
    UnknownKeyId,
)
from agentwall.identity import IdentityConfig, TokenVerifier, coerce_identity_config

ISSUER = "https://auth.example.test"
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    return {"rsa": rsa_key("rsa-1"), "ec": ec_key("ec-1"), "ed": ed25519_key("ed-1")}


def make_verifier(
    keys: list[SigningKey], now: float = NOW, **config: Any
) -> tuple[TokenVerifier, IdentityConfig]:
    cfg = coerce_identity_config(
        {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "algorithms": ["RS256", "ES256", "EdDSA"],
            "clock_skew_seconds": 30,
            **config,
        }
    )
    verifier = TokenVerifier(cfg)
    verifier.load_jwks({"keys": [k.public_jwk for k in keys]}, now)
    return verifier, cfg


def token(key: SigningKey, **overrides: Any) -> str:
    return sign(key, claims(ISSUER, NOW, **overrides))


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed"])
def test_valid_token_for_each_key_type(keys: dict[str, SigningKey], kind: str) -> None:
    verifier, _ = make_verifier(list(keys.values()))
    identity = verifier.verify(token(keys[kind]), NOW + 1)
    assert identity.subject == "alice"
    assert identity.issuer == ISSUER
    assert identity.scopes == ("deploy:write", "tools:read")
    assert identity.claims == {"aud": AUDIENCE, "groups": ["release", "dev"]}
    assert len(identity.claims_class) == 64


def test_expired_token_rejected_after_skew(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier([keys["rsa"]])
    tok = token(keys["rsa"], exp=int(NOW) + 100)
    verifier.verify(tok, NOW + 129)  # within 30 s of skew
    with pytest.raises(TokenInvalid) as err:
        verifier.verify(tok, NOW + 130)
    assert err.value.reason == "expired"
    assert err.value.http_status == 401


def test_cached_token_expires_too(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier([keys["ec"]])
    tok = token(keys["ec"], exp=int(NOW) + 10)
    verifier.verify(tok, NOW)
    verifier.verify(tok, NOW + 5)
    assert verifier.hits == 1
    with pytest.raises(TokenInvalid, match="expired"):
        verifier.verify(tok, NOW + 41)


def test_nbf_in_the_future_rejected(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier([keys["rsa"]])
    tok = token(keys["rsa"], nbf=int(NOW) + 300, iat=int(NOW))
    with pytest.raises(TokenInvalid) as err:
        verifier.verify(tok, NOW)
    assert err.value.reason == "not_yet_valid"
    # Within the skew of nbf it is accepted, and the cache does not let it in
    # earlier than that afterwards.
    identity = verifier.verify(tok, NOW + 271)
    assert identity.subject == "alice"
    with pytest.raises(TokenInvalid, match="not valid yet"):
        verifier.verify(tok, NOW)


def test_iat_in_the_future_rejected(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier([keys["rsa"]])
    with pytest.raises(TokenInvalid, match="future"):
        verifier.verify(token(keys["rsa"], iat=int(NOW) + 3600, nbf=None), NOW)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"iss": "https://evil.example.test"}, "wrong_issuer"),
        ({"iss": ISSUER + "/"}, "wrong_issuer"),
        ({"aud": "some-other-api"}, "wrong_audience"),
        ({"aud": ["some-other-api", "another"]}, "wrong_audience"),
        ({"exp": None}, "missing_claim"),
        ({"sub": None}, "missing_claim"),
        ({"aud": None}, "missing_claim"),
        ({"exp": "tomorrow"}, "malformed"),
    ],
)
def test_wrong_claims_rejected(
    keys: dict[str, SigningKey], overrides: dict[str, Any], reason: str
) -> None:
    verifier, _ = make_verifier([keys["rsa"]])
    with pytest.raises(TokenInvalid) as err:
        verifier.verify(token(keys["rsa"], **overrides), NOW)
    assert err.value.reason == reason


def test_audience_list_containing_ours_accepted(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier([keys["rsa"]])
    identity = verifier.verify(token(keys["rsa"], aud=["other", AUDIENCE]), NOW)
    assert identity.subject == "alice"


def test_alg_none_rejected(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier([keys["rsa"]])
    payload = claims(ISSUER, NOW)
    for alg in ("none", "None", "NONE"):
        with pytest.raises(TokenInvalid) as err:
            verifier.verify(forge({"alg": alg, "kid": "rsa-1"}, payload), NOW)
        assert err.value.reason == "alg_not_allowed"


def test_hs256_key_confusion_rejected(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier([keys["rsa"]])
    forged = forge_hs256_with_public_key(keys["rsa"], claims(ISSUER, NOW))
    with pytest.raises(TokenInvalid) as err:
        verifier.verify(forged, NOW)
    assert err.value.reason == "alg_not_allowed"


def test_hs256_refused_even_if_allow_list_were_wider(keys: dict[str, SigningKey]) -> None:
    # HMAC cannot even be configured next to a public key set.
    with pytest.raises(Exception, match="key confusion"):
        make_verifier([keys["rsa"]], algorithms=["RS256", "HS256"])


def test_header_cannot_pick_another_asymmetric_algorithm(keys: dict[str, SigningKey]) -> None:
    # An ES256 signature presented under the RSA key's kid.
    verifier, _ = make_verifier([keys["rsa"], keys["ec"]])
    payload = claims(ISSUER, NOW)
    crossed = jwt.encode(payload, keys["ec"].private, algorithm="ES256", headers={"kid": "rsa-1"})
    with pytest.raises(TokenInvalid) as err:
        verifier.verify(crossed, NOW)
    assert err.value.reason == "alg_not_allowed"


def test_algorithm_outside_allow_list_rejected(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier([keys["rsa"], keys["ed"]], algorithms=["RS256"])
    with pytest.raises(TokenInvalid) as err:
        verifier.verify(token(keys["ed"]), NOW)
    assert err.value.reason == "alg_not_allowed"


def test_rsa_key_without_declared_alg_verifies_only_allowed_rsa_algs() -> None:
    key = rsa_key("plain", declare_alg=False)
    verifier, _ = make_verifier([key], algorithms=["PS256"])
    ps = jwt.encode(claims(ISSUER, NOW), key.private, algorithm="PS256", headers={"kid": "plain"})
    assert verifier.verify(ps, NOW).subject == "alice"
    rs = jwt.encode(claims(ISSUER, NOW), key.private, algorithm="RS256", headers={"kid": "plain"})
    with pytest.raises(TokenInvalid, match="allow-list"):
        verifier.verify(rs, NOW)


def test_tampered_payload_rejected(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier([keys["ed"]])
    good = token(keys["ed"])
    evil = token(keys["ed"], sub="mallory")
    spliced = ".".join([good.split(".")[0], evil.split(".")[1], good.split(".")[2]])
    with pytest.raises(TokenInvalid) as err:
        verifier.verify(spliced, NOW)
    assert err.value.reason == "bad_signature"


def test_token_signed_by_unknown_key_with_known_kid_rejected(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier([keys["rsa"]])
    impostor = rsa_key("rsa-1")
    with pytest.raises(TokenInvalid) as err:
        verifier.verify(token(impostor), NOW)
    assert err.value.reason == "bad_signature"


def test_unknown_kid_raises_unknown_key(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier([keys["rsa"]])
    with pytest.raises(UnknownKeyId) as err:
        verifier.verify(token(ec_key("never-published")), NOW)
    assert err.value.kid == "never-published"
    assert err.value.http_status == 401


def test_kidless_token_uses_single_key_only(keys: dict[str, SigningKey]) -> None:
    one, _ = make_verifier([keys["ec"]])
    kidless = jwt.encode(claims(ISSUER, NOW), keys["ec"].private, algorithm="ES256")
    assert one.verify(kidless, NOW).subject == "alice"
    two, _ = make_verifier([keys["ec"], keys["rsa"]])
    with pytest.raises(TokenInvalid, match="no kid"):
        two.verify(kidless, NOW)


def test_header_key_overrides_rejected(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier([keys["rsa"]])
    payload = claims(ISSUER, NOW)
    for extra in ({"jku": "https://evil/jwks"}, {"x5u": "https://evil/c"}, {"jwk": {"kty": "RSA"}}):
        tok = jwt.encode(
            payload, keys["rsa"].private, algorithm="RS256", headers={"kid": "rsa-1", **extra}
        )
        with pytest.raises(TokenInvalid, match="overrides"):
            verifier.verify(tok, NOW)


def test_required_claims_are_403_insufficient(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier(
        [keys["rsa"]], required_claims={"groups": "release", "email_verified": True}
    )
    with pytest.raises(InsufficientScope) as err:
        verifier.verify(token(keys["rsa"]), NOW)
    assert err.value.http_status == 403
    assert "email_verified" in str(err.value)
    ok = verifier.verify(token(keys["rsa"], email_verified=True), NOW)
    assert ok.subject == "alice"
    with pytest.raises(InsufficientScope):
        verifier.verify(token(keys["rsa"], email_verified=True, groups=["dev"]), NOW)


def test_cache_hit_returns_same_identity(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier([keys["rsa"]])
    tok = token(keys["rsa"])
    first = verifier.verify(tok, NOW)
    second = verifier.verify(tok, NOW + 1)
    assert second is first
    assert (verifier.hits, verifier.misses) == (1, 1)


def test_key_removed_evicts_cached_tokens(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier([keys["rsa"], keys["ec"]])
    rsa_tok, ec_tok = token(keys["rsa"]), token(keys["ec"])
    verifier.verify(rsa_tok, NOW)
    verifier.verify(ec_tok, NOW)
    assert verifier.cache_len() == 2
    change = verifier.load_jwks({"keys": [keys["ec"].public_jwk]}, NOW + 1)
    assert change.removed == ("rsa-1",)
    assert verifier.cache_len() == 1
    with pytest.raises(UnknownKeyId):
        verifier.verify(rsa_tok, NOW + 2)
    assert verifier.verify(ec_tok, NOW + 2).subject == "alice"


def test_key_replaced_under_same_kid_invalidates_cache(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier([keys["rsa"]])
    tok = token(keys["rsa"])
    verifier.verify(tok, NOW)
    replacement = rsa_key("rsa-1")
    change = verifier.load_jwks({"keys": [replacement.public_jwk]}, NOW + 1)
    assert change.removed == ("rsa-1",)
    assert change.added == ("rsa-1",)
    with pytest.raises(TokenInvalid, match="signature"):
        verifier.verify(tok, NOW + 2)


def test_expired_key_set_fails_closed_even_on_cache_hit(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier([keys["rsa"]])
    verifier.jwks.max_age = 60
    tok = token(keys["rsa"], exp=int(NOW) + 3600)
    verifier.verify(tok, NOW)
    with pytest.raises(KeysUnavailable) as err:
        verifier.verify(tok, NOW + 61)
    assert err.value.http_status == 503


def test_never_loaded_fails_closed(keys: dict[str, SigningKey]) -> None:
    cfg = coerce_identity_config({"issuer": ISSUER, "audience": AUDIENCE})
    with pytest.raises(KeysUnavailable, match="not been fetched"):
        TokenVerifier(cfg).verify(token(keys["rsa"]), NOW)


def test_cache_is_bounded(keys: dict[str, SigningKey]) -> None:
    cfg = coerce_identity_config({"issuer": ISSUER, "audience": AUDIENCE})
    verifier = TokenVerifier(cfg, cache_size=3)
    verifier.load_jwks({"keys": [keys["ed"].public_jwk]}, NOW)
    tokens = [token(keys["ed"], sub=f"user-{i}") for i in range(5)]
    for tok in tokens:
        verifier.verify(tok, NOW)
    assert verifier.cache_len() == 3
    assert verifier.verify(tokens[0], NOW).subject == "user-0"  # re-verified, still right


def test_claims_class_stable_across_renewal_and_distinct_across_groups(
    keys: dict[str, SigningKey],
) -> None:
    verifier, _ = make_verifier([keys["rsa"]])
    a1 = verifier.verify(token(keys["rsa"], jti="1", iat=int(NOW) - 5), NOW)
    a2 = verifier.verify(token(keys["rsa"], jti="2", exp=int(NOW) + 900), NOW)
    assert a1.claims_class == a2.claims_class
    other_groups = verifier.verify(token(keys["rsa"], groups=["dev"]), NOW)
    assert other_groups.claims_class != a1.claims_class
    other_scope = verifier.verify(token(keys["rsa"], scope="tools:read"), NOW)
    assert other_scope.claims_class != a1.claims_class


def test_claims_class_narrowed_to_what_rules_look_at(keys: dict[str, SigningKey]) -> None:
    cfg = coerce_identity_config({"issuer": ISSUER, "audience": AUDIENCE})
    verifier = TokenVerifier(cfg, class_claims=["groups"], subject_in_class=False)
    verifier.load_jwks({"keys": [keys["rsa"].public_jwk]}, NOW)
    alice = verifier.verify(token(keys["rsa"], sub="alice", email="a@x"), NOW)
    bob = verifier.verify(token(keys["rsa"], sub="bob", email="b@x"), NOW)
    assert alice.claims == {"groups": ["release", "dev"]}
    assert alice.claims_class == bob.claims_class
    carol = verifier.verify(token(keys["rsa"], sub="carol", groups=["ops"]), NOW)
    assert carol.claims_class != alice.claims_class


def test_scopes_from_scp_and_hierarchy(keys: dict[str, SigningKey]) -> None:
    verifier, _ = make_verifier(
        [keys["rsa"]],
        scope_implies={"admin": ["deploy:write", "tools:read"], "deploy:write": "deploy:read"},
    )
    identity = verifier.verify(token(keys["rsa"], scope=None, scp=["admin"]), NOW)
    assert identity.scopes == ("admin", "deploy:read", "deploy:write", "tools:read")


@pytest.mark.parametrize(
    "bad",
    ["", "abc", "a.b", "a.b.c.d", "!!!.???.###", "eyJ.eyJ.sig", "a" * 20_000, "é.é.é"],
)
def test_malformed_tokens_are_identity_errors(keys: dict[str, SigningKey], bad: str) -> None:
    verifier, _ = make_verifier([keys["rsa"]])
    with pytest.raises(TokenInvalid):
        verifier.verify(bad, NOW)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_arbitrary_input_only_raises_identity_errors(data: str | bytes) -> None:
    cfg = coerce_identity_config({"issuer": ISSUER, "audience": AUDIENCE})
    verifier = TokenVerifier(cfg)
    verifier.load_jwks({"keys": [_FUZZ_KEY.public_jwk]}, NOW)
    with pytest.raises(IdentityError):
        verifier.verify(data, NOW)


@settings(max_examples=200, deadline=None)
@given(
    header=st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "crit", "b64", "jku", "x"]),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.text(max_size=8),
            st.lists(st.text(max_size=4), max_size=2),
        ),
    ),
    payload=st.dictionaries(
        st.sampled_from(["iss", "sub", "aud", "exp", "nbf", "iat", "scope"]),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
    ),
    signature=st.binary(max_size=64),
)
def test_forged_structured_tokens_never_verify(
    header: dict[str, Any], payload: dict[str, Any], signature: bytes
) -> None:
    cfg = coerce_identity_config({"issuer": ISSUER, "audience": AUDIENCE})
    verifier = TokenVerifier(cfg)
    verifier.load_jwks({"keys": [_FUZZ_KEY.public_jwk]}, NOW)
    with pytest.raises(IdentityError):
        verifier.verify(forge(header, payload, signature), NOW)


_FUZZ_KEY = ec_key("fuzz")


def test_wall_clock_not_used(keys: dict[str, SigningKey]) -> None:
    # A token that expired in 1970 by the machine's clock verifies when the
    # passed-in clock says 1970: the time is an input, PyJWT's clock is unused.
    verifier, _ = make_verifier([keys["rsa"]], now=500)
    tok = sign(keys["rsa"], claims(ISSUER, 400, exp=1000))
    assert verifier.verify(tok, 500).subject == "alice"
    with pytest.raises(TokenInvalid, match="expired"):
        verifier.verify(tok, 1031)


def test_key_confusion_refused_by_the_key_even_with_a_misbuilt_config(
    keys: dict[str, SigningKey],
) -> None:
    # coerce_identity_config refuses HS256; build the config by hand to prove
    # the second line of defence: a public key never verifies an HMAC.
    cfg = IdentityConfig(issuer=ISSUER, audience=(AUDIENCE,), algorithms=("RS256", "HS256"))
    verifier = TokenVerifier(cfg)
    verifier.load_jwks({"keys": [keys["rsa"].public_jwk]}, NOW)
    forged = forge_hs256_with_public_key(keys["rsa"], claims(ISSUER, NOW))
    with pytest.raises(TokenInvalid, match="not valid for key"):
        verifier.verify(forged, NOW)
