"""Ed25519 signatures over a policy's canonical content hash (pure: bytes in, bytes out).

What is signed is not the YAML file but a small *statement* about it::

    {"agentwall_version": "0.1.0", "algorithm": "ed25519", "demo": false,
     "format": "agentwall-policy-signature/v1", "key_id": "sha256:<hex>",
     "policy_sha256": "<hex>", "signed_at": "2026-01-27T10:00:00Z"}

encoded with ``canonical_json`` (sorted keys, compact, UTF-8).  ``policy_sha256``
is ``Policy.hash``, the sha256 of the policy's canonical form, so re-indenting
or re-ordering the YAML leaves the signature valid while any change of meaning
makes it stale.  Signing the whole statement (not the bare hash) means the
``demo`` marker, the time and the version cannot be edited without breaking
the signature, and the ``format`` string separates these signatures from any
other use of the same key.

The signature file (JSON, documented in docs/promote.md) carries the exact
signed bytes (``payload``, base64) so a third party can check it with
``openssl pkeyutl -verify -rawin`` without re-deriving the canonical form, plus
a readable copy (``statement``) that must equal the payload exactly.

Trust never comes from the file: ``verify_policy_signature`` accepts only keys
the operator passed in, found by key id (sha256 of the raw 32-byte public key).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agentwall import __version__
from agentwall.core.canonical import canonical_json, sha256_hex
from agentwall.errors import SignatureError

SIGNATURE_FORMAT: Final = "agentwall-policy-signature/v1"
ALGORITHM: Final = "ed25519"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"sha256:[0-9a-f]{64}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_STATEMENT_KEYS: Final = frozenset(
    {"agentwall_version", "algorithm", "demo", "format", "key_id", "policy_sha256", "signed_at"}
)
# Bound what we parse: a real signature file is well under 1 KiB.
MAX_SIGNATURE_FILE_BYTES: Final = 64 * 1024

SignatureReason = Literal[
    "unsigned", "malformed", "bad_signature", "untrusted_key", "stale", "demo_key", "key_file"
]


class SignatureInfo(msgspec.Struct, frozen=True):
    """A signature that verified, and what it says."""

    key_id: str
    policy_hash: str
    signed_at: str
    agentwall_version: str
    demo: bool
    # True when the key is one the operator trusts (``--trusted-key``); False
    # for an informational check against the key named in the file itself.
    trusted: bool


def _fail(reason: SignatureReason, message: str) -> SignatureError:
    return SignatureError(message, reason=reason)


# --- keys ---------------------------------------------------------------------


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Ed25519PublicKey) -> str:
    """``sha256:`` + hex sha256 of the raw 32-byte public key."""
    return "sha256:" + sha256_hex(raw_public_key(public_key))


def private_key_pem(private_key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: protect it with file permissions (0600)."""
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM, the form ``openssl pkeyutl -pubin`` reads."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key_pem(data: bytes, *, source: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise _fail("key_file", f"{source}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise _fail("key_file", f"{source}: not an Ed25519 private key")
    return key


def load_public_key_pem(data: bytes, *, source: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise _fail("key_file", f"{source}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise _fail("key_file", f"{source}: not an Ed25519 public key")
    return key


# --- signing ------------------------------------------------------------------


def format_time(moment: datetime) -> str:
    """RFC 3339, UTC, whole seconds: ``2026-01-27T10:00:00Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def statement_bytes(
    *, policy_hash: str, key_id: str, signed_at: str, agentwall_version: str, demo: bool
) -> bytes:
    statement = {
        "agentwall_version": agentwall_version,
        "algorithm": ALGORITHM,
        "demo": demo,
        "format": SIGNATURE_FORMAT,
        "key_id": key_id,
        "policy_sha256": policy_hash,
        "signed_at": signed_at,
    }
    return canonical_json(statement)


def sign_policy(
    policy_hash: str,
    private_key: Ed25519PrivateKey,
    *,
    signed_at: datetime,
    agentwall_version: str,
    demo: bool,
) -> bytes:
    """The signature file's bytes (pretty JSON + newline).  Time is passed in."""
    if not _HEX64.fullmatch(policy_hash):
        raise _fail("malformed", f"policy hash {policy_hash!r} is not 64 lowercase hex digits")
    public_key = private_key.public_key()
    payload = statement_bytes(
        policy_hash=policy_hash,
        key_id=key_id(public_key),
        signed_at=format_time(signed_at),
        agentwall_version=agentwall_version,
        demo=demo,
    )
    document = {
        "format": SIGNATURE_FORMAT,
        "statement": json.loads(payload),
        "payload": base64.b64encode(payload).decode("ascii"),
        "signature": base64.b64encode(private_key.sign(payload)).decode("ascii"),
        # A convenience for third parties and for messages; never a source of trust.
        "public_key": base64.b64encode(raw_public_key(public_key)).decode("ascii"),
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


# --- verifying ----------------------------------------------------------------


class _Parsed(msgspec.Struct, frozen=True):
    payload: bytes
    signature: bytes
    public_key: bytes
    statement: dict[str, Any]


def _b64(document: dict[str, Any], field: str, source: str) -> bytes:
    value = document.get(field)
    if not isinstance(value, str):
        raise _fail("malformed", f"{source}: field {field!r} is missing or not a string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise _fail("malformed", f"{source}: field {field!r} is not valid base64") from None


def _parse(signature_doc: bytes, source: str) -> _Parsed:
    if len(signature_doc) > MAX_SIGNATURE_FILE_BYTES:
        raise _fail("malformed", f"{source}: {len(signature_doc)} bytes is too large")
    try:
        document = json.loads(signature_doc)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _fail("malformed", f"{source}: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise _fail("malformed", f"{source}: expected a JSON object")
    if document.get("format") != SIGNATURE_FORMAT:
        raise _fail(
            "malformed",
            f"{source}: format is {document.get('format')!r}, expected {SIGNATURE_FORMAT!r}",
        )
    payload = _b64(document, "payload", source)
    signature = _b64(document, "signature", source)
    public_key = _b64(document, "public_key", source)
    if len(signature) != 64:
        raise _fail(
            "malformed", f"{source}: an Ed25519 signature is 64 bytes, not {len(signature)}"
        )
    if len(public_key) != 32:
        raise _fail(
            "malformed", f"{source}: an Ed25519 public key is 32 bytes, not {len(public_key)}"
        )
    try:
        statement = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _fail("malformed", f"{source}: payload is not JSON") from None
    if not isinstance(statement, dict) or set(statement) != _STATEMENT_KEYS:
        raise _fail("malformed", f"{source}: payload does not have the statement's fields")
    # The readable copy must say exactly what was signed, so nobody is misled
    # by an edited ``statement`` next to an intact payload; and the payload
    # must be canonical, so one statement has exactly one signed form.
    try:
        consistent = (
            canonical_json(document.get("statement")) == payload == canonical_json(statement)
        )
    except (ValueError, TypeError, RecursionError):
        consistent = False
    if not consistent:
        raise _fail("malformed", f"{source}: statement does not match the signed payload")
    checks = (
        (statement["algorithm"] == ALGORITHM, "algorithm"),
        (statement["format"] == SIGNATURE_FORMAT, "format"),
        (isinstance(statement["demo"], bool), "demo"),
        (isinstance(statement["agentwall_version"], str), "agentwall_version"),
        (isinstance(statement["key_id"], str) and _KEY_ID.fullmatch(statement["key_id"]), "key_id"),
        (
            isinstance(statement["policy_sha256"], str)
            and _HEX64.fullmatch(statement["policy_sha256"]),
            "policy_sha256",
        ),
        (
            isinstance(statement["signed_at"], str) and _TIME.fullmatch(statement["signed_at"]),
            "signed_at",
        ),
    )
    for ok, field in checks:
        if not ok:
            raise _fail("malformed", f"{source}: statement field {field!r} is not valid")
    if "sha256:" + sha256_hex(public_key) != statement["key_id"]:
        raise _fail("malformed", f"{source}: public_key does not match key_id")
    return _Parsed(payload=payload, signature=signature, public_key=public_key, statement=statement)


def read_signature_doc(signature_doc: bytes, *, source: str = "signature") -> dict[str, Any]:
    """The signed statement, after checking the file's shape (not its trust)."""
    return dict(_parse(signature_doc, source).statement)


def verify_policy_signature(
    policy_hash: str,
    signature_doc: bytes | None,
    trusted_public_keys: Iterable[Ed25519PublicKey],
    *,
    source: str = "signature",
    allow_demo: bool = False,
    unsafe_trust_embedded_key: bool = False,
) -> SignatureInfo:
    """Check that ``signature_doc`` is a signature, by a trusted key, over ``policy_hash``.

    Raises ``SignatureError`` whose ``reason`` is one of: unsigned (no
    document), malformed, demo_key (an ephemeral key, unless ``allow_demo``),
    untrusted_key, bad_signature, stale (a good signature for other content).

    ``unsafe_trust_embedded_key`` verifies against the key named in the file
    itself.  That proves only that the file is internally consistent, never
    who signed it: it is for informational display, never for enforcement.
    """
    if signature_doc is None:
        raise _fail("unsigned", f"the policy is not signed: {source} does not exist")
    parsed = _parse(signature_doc, source)
    statement = parsed.statement
    signer = statement["key_id"]
    if statement["demo"] and not allow_demo:
        raise _fail(
            "demo_key",
            f"{source}: signed with an ephemeral DEMO key ({signer}); "
            "sign with a real key: agentwall promote --key KEYBASE.key",
        )
    trusted = {key_id(k): k for k in trusted_public_keys}
    public_key = trusted.get(signer)
    if public_key is None and unsafe_trust_embedded_key:
        public_key = Ed25519PublicKey.from_public_bytes(parsed.public_key)
    if public_key is None:
        known = ", ".join(sorted(trusted)) or "none given"
        raise _fail(
            "untrusted_key",
            f"{source}: signed by key {signer}, which is not a trusted key (trusted: {known})",
        )
    try:
        public_key.verify(parsed.signature, parsed.payload)
    except InvalidSignature:
        raise _fail(
            "bad_signature", f"{source}: the Ed25519 signature does not verify for key {signer}"
        ) from None
    if statement["policy_sha256"] != policy_hash:
        why = "edited after signing, or the wrong signature file"
        if statement["agentwall_version"] != __version__:
            # The canonical form may change between versions; say so rather
            # than let an upgrade look like tampering.
            why += (
                "; or the canonical policy form changed between AgentWall "
                f"{statement['agentwall_version']} (signer) and {__version__}: "
                "re-review and re-sign"
            )
        raise _fail(
            "stale",
            f"{source}: signature is for policy sha256 {statement['policy_sha256']}, "
            f"but the policy's current content hashes to {policy_hash} ({why})",
        )
    return SignatureInfo(
        key_id=signer,
        policy_hash=policy_hash,
        signed_at=statement["signed_at"],
        agentwall_version=statement["agentwall_version"],
        demo=statement["demo"],
        trusted=signer in trusted,
    )
