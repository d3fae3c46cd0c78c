"""Ed25519 policy signatures: round trip, and every way a signature is refused."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentwall.core.canonical import sha256_hex
from agentwall.errors import SignatureError
from agentwall.promote import signing

HASH_A = sha256_hex(b"policy A")
HASH_B = sha256_hex(b"policy B")
WHEN = datetime(2026, 1, 27, 10, 0, 0, tzinfo=UTC)


def _sign(
    key: signing.Ed25519PrivateKey, policy_hash: str = HASH_A, *, demo: bool = False
) -> bytes:
    return signing.sign_policy(
        policy_hash, key, signed_at=WHEN, agentwall_version="9.9.9", demo=demo
    )


def _reason(exc: pytest.ExceptionInfo[SignatureError]) -> str:
    return str(exc.value.reason)


@pytest.fixture(scope="module")
def key() -> signing.Ed25519PrivateKey:
    return signing.generate_private_key()


def test_round_trip(key: signing.Ed25519PrivateKey) -> None:
    doc = _sign(key)
    info = signing.verify_policy_signature(HASH_A, doc, [key.public_key()])
    assert info == signing.SignatureInfo(
        key_id=signing.key_id(key.public_key()),
        policy_hash=HASH_A,
        signed_at="2026-01-27T10:00:00Z",
        agentwall_version="9.9.9",
        demo=False,
        trusted=True,
    )


def test_round_trip_through_pem_files(key: signing.Ed25519PrivateKey) -> None:
    private = signing.load_private_key_pem(signing.private_key_pem(key), source="k")
    public = signing.load_public_key_pem(signing.public_key_pem(key.public_key()), source="p")
    doc = _sign(private)
    assert signing.verify_policy_signature(HASH_A, doc, [public]).trusted


def test_key_id_is_sha256_of_raw_public_key(key: signing.Ed25519PrivateKey) -> None:
    raw = signing.raw_public_key(key.public_key())
    assert len(raw) == 32
    assert signing.key_id(key.public_key()) == "sha256:" + sha256_hex(raw)


def test_document_shape_is_as_documented(key: signing.Ed25519PrivateKey) -> None:
    doc = json.loads(_sign(key))
    assert set(doc) == {"format", "statement", "payload", "signature", "public_key"}
    assert doc["format"] == "agentwall-policy-signature/v1"
    assert (
        base64.b64decode(doc["payload"])
        == json.dumps(doc["statement"], sort_keys=True, separators=(",", ":")).encode()
    )
    assert doc["statement"] == {
        "agentwall_version": "9.9.9",
        "algorithm": "ed25519",
        "demo": False,
        "format": "agentwall-policy-signature/v1",
        "key_id": signing.key_id(key.public_key()),
        "policy_sha256": HASH_A,
        "signed_at": "2026-01-27T10:00:00Z",
    }


def test_unsigned_is_refused(key: signing.Ed25519PrivateKey) -> None:
    with pytest.raises(SignatureError, match="not signed") as exc:
        signing.verify_policy_signature(HASH_A, None, [key.public_key()])
    assert _reason(exc) == "unsigned"


def test_stale_signature_is_refused(key: signing.Ed25519PrivateKey) -> None:
    # The policy was edited after signing: its hash changed.
    with pytest.raises(SignatureError, match=f"hashes to {HASH_B}") as exc:
        signing.verify_policy_signature(HASH_B, _sign(key, HASH_A), [key.public_key()])
    assert _reason(exc) == "stale"


def test_stale_signature_from_another_version_mentions_the_canonical_form(
    key: signing.Ed25519PrivateKey,
) -> None:
    # _sign records version 9.9.9, which is not the running version.
    with pytest.raises(SignatureError, match="canonical policy form changed"):
        signing.verify_policy_signature(HASH_B, _sign(key, HASH_A), [key.public_key()])
    same = signing.sign_policy(
        HASH_A, key, signed_at=WHEN, agentwall_version=signing.__version__, demo=False
    )
    with pytest.raises(SignatureError) as exc:
        signing.verify_policy_signature(HASH_B, same, [key.public_key()])
    assert "canonical" not in str(exc.value)


def test_untrusted_key_is_refused(key: signing.Ed25519PrivateKey) -> None:
    other = signing.generate_private_key()
    with pytest.raises(SignatureError, match="not a trusted key") as exc:
        signing.verify_policy_signature(HASH_A, _sign(other), [key.public_key()])
    assert _reason(exc) == "untrusted_key"


def test_no_trusted_keys_at_all_is_refused(key: signing.Ed25519PrivateKey) -> None:
    with pytest.raises(SignatureError, match="none given") as exc:
        signing.verify_policy_signature(HASH_A, _sign(key), [])
    assert _reason(exc) == "untrusted_key"


def test_demo_key_is_refused_unless_allowed(key: signing.Ed25519PrivateKey) -> None:
    doc = _sign(key, demo=True)
    with pytest.raises(SignatureError, match="DEMO") as exc:
        signing.verify_policy_signature(HASH_A, doc, [key.public_key()])
    assert _reason(exc) == "demo_key"
    assert signing.verify_policy_signature(HASH_A, doc, [key.public_key()], allow_demo=True).demo


def _resign_statement(doc: bytes, **changes: object) -> bytes:
    """Edit the statement and payload consistently but keep the old signature."""
    document = json.loads(doc)
    document["statement"].update(changes)
    payload = json.dumps(document["statement"], sort_keys=True, separators=(",", ":")).encode()
    document["payload"] = base64.b64encode(payload).decode()
    return json.dumps(document).encode()


def test_edited_statement_breaks_the_signature(key: signing.Ed25519PrivateKey) -> None:
    # Someone rewrites the hash (or strips the demo marker) in both copies.
    for changes in ({"policy_sha256": HASH_B}, {"signed_at": "2030-01-01T00:00:00Z"}):
        doc = _resign_statement(_sign(key), **changes)
        with pytest.raises(SignatureError, match="does not verify") as exc:
            signing.verify_policy_signature(HASH_B, doc, [key.public_key()])
        assert _reason(exc) == "bad_signature"
    stripped = _resign_statement(_sign(key, demo=True), demo=False)
    with pytest.raises(SignatureError) as exc:
        signing.verify_policy_signature(HASH_A, stripped, [key.public_key()])
    assert _reason(exc) == "bad_signature"


def test_flipped_signature_bit_is_refused(key: signing.Ed25519PrivateKey) -> None:
    document = json.loads(_sign(key))
    sig = bytearray(base64.b64decode(document["signature"]))
    sig[7] ^= 1
    document["signature"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(SignatureError) as exc:
        signing.verify_policy_signature(HASH_A, json.dumps(document).encode(), [key.public_key()])
    assert _reason(exc) == "bad_signature"


def test_readable_statement_must_match_payload(key: signing.Ed25519PrivateKey) -> None:
    document = json.loads(_sign(key))
    document["statement"]["policy_sha256"] = HASH_B
    with pytest.raises(SignatureError, match="does not match the signed payload") as exc:
        signing.verify_policy_signature(HASH_B, json.dumps(document).encode(), [key.public_key()])
    assert _reason(exc) == "malformed"


def test_embedded_public_key_must_match_key_id(key: signing.Ed25519PrivateKey) -> None:
    document = json.loads(_sign(key))
    other = signing.raw_public_key(signing.generate_private_key().public_key())
    document["public_key"] = base64.b64encode(other).decode()
    with pytest.raises(SignatureError, match="does not match key_id"):
        signing.verify_policy_signature(HASH_A, json.dumps(document).encode(), [key.public_key()])


def test_embedded_key_check_is_informational_only(key: signing.Ed25519PrivateKey) -> None:
    info = signing.verify_policy_signature(HASH_A, _sign(key), [], unsafe_trust_embedded_key=True)
    assert info.trusted is False


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"format": "other"}', "format is 'other'"),
        (b'{"format": "agentwall-policy-signature/v1"}', "'payload' is missing"),
        (
            b'{"format": "agentwall-policy-signature/v1", "payload": "!!", "signature": "", '
            b'"public_key": ""}',
            "not valid base64",
        ),
        (b"[" * 60_000, "not JSON"),
        (b" " * (signing.MAX_SIGNATURE_FILE_BYTES + 1), "too large"),
    ],
)
def test_malformed_documents(key: signing.Ed25519PrivateKey, doc: bytes, message: str) -> None:
    with pytest.raises(SignatureError, match=message) as exc:
        signing.verify_policy_signature(HASH_A, doc, [key.public_key()])
    assert _reason(exc) == "malformed"


def test_wrong_key_types_are_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1())
    from cryptography.hazmat.primitives import serialization

    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(SignatureError, match="not an Ed25519 private key"):
        signing.load_private_key_pem(pem, source="ec.key")
    pub = other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(SignatureError, match="not an Ed25519 public key"):
        signing.load_public_key_pem(pub, source="ec.pub")
    with pytest.raises(SignatureError, match="not a PEM public key"):
        signing.load_public_key_pem(b"garbage", source="x.pub")


def test_bad_policy_hash_is_not_signed(key: signing.Ed25519PrivateKey) -> None:
    with pytest.raises(SignatureError, match="64 lowercase hex"):
        _sign(key, "ABC")


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_only_ever_raise_signature_error(data: bytes) -> None:
    with pytest.raises(SignatureError):
        signing.verify_policy_signature(HASH_A, data, [])


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from(["format", "statement", "payload", "signature", "public_key", "x"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=10,
        ),
    )
)
def test_arbitrary_documents_only_ever_raise_signature_error(document: dict[str, object]) -> None:
    document.setdefault("format", signing.SIGNATURE_FORMAT)
    with pytest.raises(SignatureError):
        signing.verify_policy_signature(
            HASH_A, json.dumps(document).encode(), [], unsafe_trust_embedded_key=True
        )
