"""Where the audit key comes from.

In order: ``--audit-key-file`` (or ``verify-log --key-file``), then the
``AGENTWALL_AUDIT_KEY`` environment variable (hex), then a key generated once
at ``default_key_path()`` with mode 0600.  A generated key lives on the same
host as the log, so it only protects against attackers who can edit the log
but cannot read that file; docs/audit.md says how to keep the key elsewhere.

A key file holds the key as hex text (at least 64 hex digits, whitespace
ignored) or as at least 32 raw bytes.  Only the key id ever leaves this module.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from agentwall.audit.record import MacKey, key_id_for
from agentwall.errors import ConfigError

KEY_ENV: Final = "AGENTWALL_AUDIT_KEY"
KEY_DIR_ENV: Final = "AGENTWALL_AUDIT_KEY_DIR"
MIN_KEY_BYTES: Final = 32


class AuditKey:
    """The secret, kept out of reprs and logs."""

    __slots__ = ("generated", "key_id", "mac_key", "secret", "source", "warnings")

    def __init__(
        self, secret: bytes, *, source: str, generated: bool = False, warnings: tuple[str, ...] = ()
    ) -> None:
        if len(secret) < MIN_KEY_BYTES:
            raise ConfigError(
                f"the audit key from {source} is {len(secret)} bytes; at least "
                f"{MIN_KEY_BYTES} are needed"
            )
        self.secret = secret
        self.source = source
        self.generated = generated
        self.warnings = warnings
        self.key_id = key_id_for(secret)
        self.mac_key = MacKey(secret)

    def __repr__(self) -> str:
        return f"AuditKey(key_id={self.key_id!r}, source={self.source!r})"


def default_key_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(KEY_DIR_ENV):
        return Path(env[KEY_DIR_ENV]) / "audit.key"
    config = env.get("XDG_CONFIG_HOME") or str(
        Path(env.get("HOME") or "~").expanduser() / ".config"
    )
    return Path(config) / "agentwall" / "audit.key"


def parse_key_bytes(data: bytes, source: str, *, hex_only: bool = False) -> bytes:
    text = b"".join(data.split())
    looks_hex = bool(text) and all(c in b"0123456789abcdefABCDEF" for c in text)
    if looks_hex:
        if len(text) >= 2 * MIN_KEY_BYTES and len(text) % 2 == 0:
            return bytes.fromhex(text.decode("ascii"))
    elif not hex_only and len(data) >= MIN_KEY_BYTES:
        return data
    raise ConfigError(
        f"the audit key in {source} must be at least {2 * MIN_KEY_BYTES} hex digits"
        + ("" if hex_only else f" or {MIN_KEY_BYTES} raw bytes")
    )


def read_key_file(path: str | Path) -> AuditKey:
    path = Path(path)
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"cannot read the audit key file {path}: {exc.strerror}") from exc
    warnings: tuple[str, ...] = ()
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings = (
            f"the audit key file {path} is readable by other users (mode "
            f"{stat.S_IMODE(mode):o}); chmod 600 it",
        )
    return AuditKey(parse_key_bytes(data, str(path)), source=str(path), warnings=warnings)


def key_from_env(env: Mapping[str, str]) -> AuditKey | None:
    value = env.get(KEY_ENV)
    if not value:
        return None
    return AuditKey(
        parse_key_bytes(value.encode("utf-8"), f"${KEY_ENV}", hex_only=True), source=f"${KEY_ENV}"
    )


def generate_key_file(path: Path) -> AuditKey:
    """Create a new random key at ``path`` (never overwriting one) with mode 0600."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secrets.token_bytes(MIN_KEY_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return read_key_file(path)
    try:
        os.write(fd, secret.hex().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    warning = (
        f"generated a new audit key at {path} (key id {key_id_for(secret)}). A key on the "
        "same host as the log protects against someone who can edit the log but not read "
        "this file; keep a copy elsewhere and see docs/audit.md for stronger set-ups."
    )
    return AuditKey(secret, source=str(path), generated=True, warnings=(warning,))


def load_audit_key(
    key_file: str | Path | None,
    *,
    env: Mapping[str, str] | None = None,
    generate: bool = True,
) -> AuditKey:
    """The writer's key: the file, else the environment, else the default key
    file (created on first use when ``generate``)."""
    env = os.environ if env is None else env
    if key_file is not None:
        return read_key_file(key_file)
    from_env = key_from_env(env)
    if from_env is not None:
        return from_env
    default = default_key_path(env)
    if default.exists():
        return read_key_file(default)
    if not generate:
        raise ConfigError(f"no audit key: pass --key-file, set {KEY_ENV}, or create {default}")
    return generate_key_file(default)


def load_verify_keys(
    key_files: list[str] | None, *, env: Mapping[str, str] | None = None
) -> list[AuditKey]:
    """Keys for checking a log: every ``--key-file``, else the writer's default."""
    if key_files:
        return [read_key_file(p) for p in key_files]
    return [load_audit_key(None, env=env, generate=False)]


__all__ = [
    "KEY_DIR_ENV",
    "KEY_ENV",
    "AuditKey",
    "default_key_path",
    "generate_key_file",
    "load_audit_key",
    "load_verify_keys",
    "parse_key_bytes",
    "read_key_file",
]
