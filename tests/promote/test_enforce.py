"""The flags and checks the shells use at start-up and at every reload."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentwall.core.canonical import sha256_hex
from agentwall.errors import ConfigError, SignatureError
from agentwall.promote import enforce, keyfiles, signing


@dataclass(frozen=True)
class _Loaded:
    hash: str


POLICY = _Loaded(sha256_hex(b"v1"))
EDITED = _Loaded(sha256_hex(b"v2"))


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--policy")
    enforce.add_signing_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    """prod.key/prod.pub, other.key/other.pub and policy.yaml signed by prod."""
    for name in ("prod", "other"):
        keyfiles.write_keypair(tmp_path / name, signing.generate_private_key())
    (tmp_path / "policy.yaml").write_text("placeholder\n")
    _sign(tmp_path, "prod", POLICY.hash)
    return tmp_path


def _sign(tmp_path: Path, keybase: str, policy_hash: str, *, demo: bool = False) -> None:
    key = keyfiles.read_private_key(tmp_path / f"{keybase}.key")
    document = signing.sign_policy(
        policy_hash, key, signed_at=datetime.now(UTC), agentwall_version="0.1.0", demo=demo
    )
    keyfiles.write_signature(tmp_path / "policy.yaml.sig", document)


def _required(tmp: Path, *extra: str) -> argparse.Namespace:
    return _parse("--policy", str(tmp / "policy.yaml"), "--require-signed", *extra)


def test_signed_by_trusted_key_passes(setup: Path) -> None:
    args = _required(
        setup, "--trusted-key", str(setup / "other.pub"), "--trusted-key", str(setup / "prod.pub")
    )
    info = enforce.check_policy_signature(args, POLICY)
    assert info is not None
    assert info.trusted
    assert info.key_id == signing.key_id(keyfiles.read_public_keys([setup / "prod.pub"])[0])
    assert enforce.signature_audit_detail(info)["signature_key_id"] == info.key_id


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unsigned", "unsigned"),
        ("edited", "stale"),
        ("untrusted", "untrusted_key"),
        ("swapped", "stale"),
        ("demo", "demo_key"),
        ("garbage", "malformed"),
    ],
)
def test_refusals(setup: Path, case: str, reason: str) -> None:
    args = _required(setup, "--trusted-key", str(setup / "prod.pub"))
    policy = POLICY
    if case == "unsigned":
        (setup / "policy.yaml.sig").unlink()
    elif case == "edited":
        policy = EDITED
    elif case == "untrusted":
        _sign(setup, "other", POLICY.hash)
    elif case == "swapped":
        # A genuine signature by the trusted key, but for another policy.
        _sign(setup, "prod", EDITED.hash)
    elif case == "demo":
        _sign(setup, "prod", POLICY.hash, demo=True)
    elif case == "garbage":
        (setup / "policy.yaml.sig").write_text("{not json")
    with pytest.raises(SignatureError) as exc:
        enforce.check_policy_signature(args, policy)
    assert exc.value.reason == reason
    assert exc.value.exit_code == 2
    assert str(setup / "policy.yaml.sig") in str(exc.value)


def test_explicit_signature_path(setup: Path) -> None:
    (setup / "policy.yaml.sig").rename(setup / "elsewhere.sig")
    args = _required(
        setup,
        "--trusted-key",
        str(setup / "prod.pub"),
        "--policy-signature",
        str(setup / "elsewhere.sig"),
    )
    assert enforce.check_policy_signature(args, POLICY) is not None


def test_require_signed_needs_a_trusted_key(setup: Path) -> None:
    with pytest.raises(ConfigError, match="--trusted-key"):
        enforce.check_policy_signature(_required(setup), POLICY)


def test_require_signed_needs_a_policy(setup: Path) -> None:
    args = _parse("--require-signed", "--trusted-key", str(setup / "prod.pub"))
    with pytest.raises(SignatureError, match="needs a signed --policy"):
        enforce.check_policy_signature(args, None)


def test_unreadable_trusted_key_is_an_error(setup: Path) -> None:
    args = _required(setup, "--trusted-key", str(setup / "missing.pub"))
    with pytest.raises(SignatureError, match=r"missing\.pub: cannot read") as exc:
        enforce.check_policy_signature(args, POLICY)
    assert exc.value.reason == "key_file"
    args = _required(setup, "--trusted-key", str(setup / "prod.key"))
    with pytest.raises(SignatureError, match="not a PEM public key"):
        enforce.check_policy_signature(args, POLICY)


def test_without_require_signed_it_is_informational(setup: Path) -> None:
    warnings: list[str] = []
    args = _parse("--policy", str(setup / "policy.yaml"))
    info = enforce.check_policy_signature(args, POLICY, warn=warnings.append)
    assert info is not None
    assert not info.trusted
    assert "UNTRUSTED" in enforce.describe_signature(info)
    # A stale signature is a warning, not a refusal.
    assert enforce.check_policy_signature(args, EDITED, warn=warnings.append) is None
    assert len(warnings) == 1
    assert "hashes to" in warnings[0]
    (setup / "policy.yaml.sig").unlink()
    assert enforce.check_policy_signature(args, POLICY, warn=warnings.append) is None
    assert len(warnings) == 1
    assert enforce.signature_audit_detail(None) == {"signature_key_id": None}
    assert enforce.check_policy_signature(_parse(), None) is None


def test_informational_with_trusted_key_reports_trust(setup: Path) -> None:
    args = _parse("--policy", str(setup / "policy.yaml"), "--trusted-key", str(setup / "prod.pub"))
    info = enforce.check_policy_signature(args, POLICY)
    assert info is not None
    assert info.trusted


EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "promotable" / "policy.yaml"


def _real(tmp_path: Path) -> Path:
    """The promotable example, signed by prod.key, in tmp_path."""
    from agentwall.policy import load_policy

    (tmp_path / "policy.yaml").write_bytes(EXAMPLE.read_bytes())
    keyfiles.write_keypair(tmp_path / "prod", signing.generate_private_key())
    _sign(tmp_path, "prod", load_policy(tmp_path / "policy.yaml").hash)
    return tmp_path / "policy.yaml"


def test_signed_policy_loader_accepts_and_records_the_signer(tmp_path: Path) -> None:
    policy_path = _real(tmp_path)
    loader = enforce.SignedPolicyLoader(
        _parse("--require-signed", "--trusted-key", str(tmp_path / "prod.pub"))
    )
    policy = loader(policy_path)
    detail = loader.audit_detail(policy.hash)
    assert detail["signature_key_id"].startswith("sha256:")
    assert detail["signature_trusted"] is True
    assert loader.check_for("0" * 64) == enforce.SignatureCheck(None)


def test_signed_policy_loader_refuses_an_edit(tmp_path: Path) -> None:
    policy_path = _real(tmp_path)
    loader = enforce.SignedPolicyLoader(
        _parse("--require-signed", "--trusted-key", str(tmp_path / "prod.pub"))
    )
    policy_path.write_text(policy_path.read_text().replace("maximum: 100", "maximum: 101"))
    with pytest.raises(SignatureError) as exc:
        loader(policy_path)
    assert exc.value.reason == "stale"
    with pytest.raises(SignatureError, match="Safe Mode alone cannot be signed"):
        loader(None)


def test_signed_policy_loader_informational_problem_is_kept(tmp_path: Path) -> None:
    policy_path = _real(tmp_path)
    loader = enforce.SignedPolicyLoader(_parse())
    policy_path.write_text(policy_path.read_text().replace("maximum: 100", "maximum: 101"))
    policy = loader(policy_path)  # not enforced: loads
    detail = loader.audit_detail(policy.hash)
    assert detail["signature_key_id"] is None
    assert "hashes to" in detail["signature_problem"]
    assert loader(None).safe_mode_only
