from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agentwall.audit.keys import (
    AuditKey,
    load_audit_key,
    load_verify_keys,
    parse_key_bytes,
    read_key_file,
)
from agentwall.audit.record import key_id_for
from agentwall.errors import ConfigError


def test_generated_once_with_0600_and_a_warning(tmp_path: Path) -> None:
    env = {"AGENTWALL_AUDIT_KEY_DIR": str(tmp_path / "keys")}
    first = load_audit_key(None, env=env)
    assert first.generated
    assert any("same host" in w for w in first.warnings)
    path = tmp_path / "keys" / "audit.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = load_audit_key(None, env=env)
    assert not again.generated
    assert again.secret == first.secret
    assert load_verify_keys(None, env=env)[0].key_id == first.key_id


def test_order_file_then_environment_then_default(tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    key_file.write_text("11" * 32 + "\n")
    key_file.chmod(0o600)
    env = {"AGENTWALL_AUDIT_KEY": "22" * 32, "AGENTWALL_AUDIT_KEY_DIR": str(tmp_path / "d")}
    assert load_audit_key(key_file, env=env).secret == b"\x11" * 32
    from_env = load_audit_key(None, env=env)
    assert from_env.secret == b"\x22" * 32
    assert from_env.source == "$AGENTWALL_AUDIT_KEY"
    assert not (tmp_path / "d").exists()  # nothing generated when a key was given


def test_no_key_for_verification_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no audit key"):
        load_verify_keys(None, env={"AGENTWALL_AUDIT_KEY_DIR": str(tmp_path)})


@pytest.mark.parametrize("bad", [b"", b"abcd", b"ab" * 31, b"ab" * 32 + b"a", b"short raw"])
def test_bad_keys_are_refused(bad: bytes) -> None:
    with pytest.raises(ConfigError):
        parse_key_bytes(bad, "test")


def test_key_formats_and_warnings(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.write_bytes(bytes(range(40)))
    raw.chmod(0o644)
    key = read_key_file(raw)
    assert key.secret == bytes(range(40))
    assert any("chmod 600" in w for w in key.warnings)
    with pytest.raises(ConfigError, match="hex"):
        load_audit_key(None, env={"AGENTWALL_AUDIT_KEY": "not hex at all, but long enough!!"})
    with pytest.raises(ConfigError, match="cannot read"):
        read_key_file(tmp_path / "missing")


def test_the_key_never_shows_in_its_repr() -> None:
    key = AuditKey(b"\xab" * 32, source="x")
    assert "ab" * 8 not in repr(key)
    assert key.key_id in repr(key)
    assert key.key_id == key_id_for(b"\xab" * 32)
