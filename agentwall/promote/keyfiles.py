"""Reading and writing key and signature files.

Like ``load_policy``, these touch the filesystem only at load/sign time,
synchronously and never on the request path; everything they decide is done
by the pure functions in ``signing``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agentwall.errors import SignatureError
from agentwall.promote import signing

MAX_KEY_FILE_BYTES = 64 * 1024


def key_paths(keybase: str | Path) -> tuple[Path, Path]:
    """``KEYBASE.key`` and ``KEYBASE.pub``."""
    base = str(keybase)
    return Path(base + ".key"), Path(base + ".pub")


def default_signature_path(policy_path: str | Path) -> Path:
    """``P.sig`` next to the policy ``P``: ``policy.yaml`` -> ``policy.yaml.sig``."""
    return Path(str(policy_path) + ".sig")


def _read(path: Path, *, what: str, limit: int) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise SignatureError(
            f"{path}: cannot read {what}: {exc.strerror}", reason="key_file"
        ) from None
    if len(data) > limit:
        raise SignatureError(f"{path}: {what} is larger than {limit} bytes", reason="key_file")
    return data


def write_keypair(keybase: str | Path, private_key: Ed25519PrivateKey) -> tuple[Path, Path]:
    """Write ``KEYBASE.key`` (mode 0600, never overwritten) and ``KEYBASE.pub``."""
    key_path, pub_path = key_paths(keybase)
    for path in (key_path, pub_path):
        if path.exists():
            raise SignatureError(
                f"{path} already exists; refusing to overwrite a key", reason="key_file"
            )
    try:
        # O_EXCL and the mode in the open call itself: the private key is never
        # readable by others, not even for a moment.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(signing.private_key_pem(private_key))
            handle.flush()
            os.fsync(handle.fileno())
        pub_path.write_bytes(signing.public_key_pem(private_key.public_key()))
    except OSError as exc:
        raise SignatureError(f"cannot write key files: {exc}", reason="key_file") from None
    return key_path, pub_path


def read_private_key(path: str | Path) -> Ed25519PrivateKey:
    path = Path(path)
    data = _read(path, what="private key", limit=MAX_KEY_FILE_BYTES)
    return signing.load_private_key_pem(data, source=str(path))


def read_public_keys(paths: Iterable[str | Path]) -> list[Ed25519PublicKey]:
    keys = []
    for raw in paths:
        path = Path(raw)
        data = _read(path, what="trusted public key", limit=MAX_KEY_FILE_BYTES)
        keys.append(signing.load_public_key_pem(data, source=str(path)))
    return keys


def read_signature(path: str | Path) -> bytes | None:
    """The signature file's bytes, or None when it does not exist (unsigned)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return handle.read(signing.MAX_SIGNATURE_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SignatureError(
            f"{path}: cannot read signature: {exc.strerror}", reason="malformed"
        ) from None


def write_signature(path: str | Path, document: bytes) -> Path:
    """Replace the signature file atomically, so a reload never sees half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(document)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SignatureError(f"{path}: cannot write signature: {exc}", reason="key_file") from None
    return path
