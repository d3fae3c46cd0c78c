"""Signature enforcement for the shells (`start`, `wrap`, and their SIGHUP reload).

A shell calls ``add_signing_arguments(parser)`` once and, after every
``load_policy`` (start-up and each reload), ``check_policy_signature(args,
policy)`` before the policy is used.  ``SignedPolicyLoader(args)`` bundles the
two into one load function, which is also what the evaluator pool's
``PolicyEngine.load`` should be: then the pool's parent and every worker load
only a policy that passed the check, and the pool's hash comparison proves they
all hold that same policy.  With ``--require-signed`` anything but a
signature by a ``--trusted-key`` over the policy's current content raises
``SignatureError`` (exit code 2 at start-up; at reload the caller keeps the
running policy and audits the refusal).  ``signature_audit_detail`` is what
goes into the ``policy_loaded`` audit entry.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from agentwall.errors import ConfigError, SignatureError
from agentwall.policy import Policy, load_policy
from agentwall.promote import keyfiles, signing
from agentwall.promote.signing import SignatureInfo


class HashedPolicy(Protocol):
    @property
    def hash(self) -> str: ...


def add_signing_arguments(
    parser: argparse.ArgumentParser, *, with_require_signed: bool = True
) -> None:
    group = parser.add_argument_group("policy signatures (see docs/promote.md)")
    if with_require_signed:
        group.add_argument(
            "--require-signed",
            action="store_true",
            help="refuse a policy not signed by a --trusted-key over its current content",
        )
    group.add_argument(
        "--trusted-key",
        action="append",
        default=[],
        metavar="PATH",
        dest="trusted_keys",
        help="a trusted Ed25519 public key (PEM, from agentwall keygen); repeatable",
    )
    group.add_argument(
        "--policy-signature",
        metavar="PATH",
        default=None,
        help="the policy's signature file (default: P.sig next to --policy P)",
    )


def signature_path(args: argparse.Namespace) -> Path | None:
    explicit = getattr(args, "policy_signature", None)
    if explicit:
        return Path(explicit)
    policy_path = getattr(args, "policy", None)
    return keyfiles.default_signature_path(policy_path) if policy_path else None


def _stderr_warning(message: str) -> None:
    print(f"agentwall: warning: {message}", file=sys.stderr)


def check_policy_signature(
    args: argparse.Namespace,
    policy: HashedPolicy | None,
    *,
    warn: Callable[[str], None] = _stderr_warning,
) -> SignatureInfo | None:
    """Verify the policy's signature as the flags ask.  Call it at every load.

    ``--require-signed``: returns the verified ``SignatureInfo`` or raises
    ``SignatureError`` (or ``ConfigError`` for flags that cannot work).
    Otherwise: an existing signature file is checked for information only; a
    failure is passed to ``warn`` and gives None, never a refusal.
    """
    require = bool(getattr(args, "require_signed", False))
    trusted_paths: list[str] = list(getattr(args, "trusted_keys", None) or [])
    if require and not trusted_paths:
        raise ConfigError("--require-signed needs at least one --trusted-key PATH")
    sig_path = signature_path(args)
    if policy is None or sig_path is None:
        if require:
            raise SignatureError(
                "--require-signed needs a signed --policy; Safe Mode alone cannot be signed",
                reason="unsigned",
            )
        return None
    trusted = keyfiles.read_public_keys(trusted_paths)
    if require:
        return signing.verify_policy_signature(
            policy.hash, keyfiles.read_signature(sig_path), trusted, source=str(sig_path)
        )
    try:
        document = keyfiles.read_signature(sig_path)
        if document is None:
            return None
        return signing.verify_policy_signature(
            policy.hash,
            document,
            trusted,
            source=str(sig_path),
            allow_demo=True,
            unsafe_trust_embedded_key=not trusted,
        )
    except SignatureError as exc:
        warn(f"policy signature not valid (not enforced without --require-signed): {exc}")
        return None


def signature_audit_detail(info: SignatureInfo | None) -> dict[str, Any]:
    """The signature part of a ``policy_loaded`` audit entry's ``detail``."""
    if info is None:
        return {"signature_key_id": None}
    return {
        "signature_key_id": info.key_id,
        "signature_trusted": info.trusted,
        "signature_demo": info.demo,
        "signed_at": info.signed_at,
    }


def describe_signature(info: SignatureInfo | None) -> str:
    """One line for start-up output."""
    if info is None:
        return "policy signature: none"
    trust = "trusted key" if info.trusted else "UNTRUSTED key (informational check only)"
    demo = ", DEMO key" if info.demo else ""
    return f"policy signature: {info.key_id} ({trust}{demo}), signed {info.signed_at}"


class SignatureCheck(msgspec.Struct, frozen=True):
    """What the signature check said about one loaded policy."""

    info: SignatureInfo | None
    # Without --require-signed: why an existing signature did not verify.
    problem: str | None = None


class SignedPolicyLoader:
    """``load_policy`` then ``check_policy_signature``: the one load function
    for start-up, SIGHUP reloads and the evaluator pool's ``PolicyEngine``.

    Raises ``PolicyError`` or ``SignatureError`` (the caller keeps the running
    policy on reload).  ``check_for(policy.hash)`` gives what the check said,
    for the ``policy_loaded`` audit entry.
    """

    _KEEP = 16  # checks remembered (one per distinct policy hash loaded)

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._checks: dict[str, SignatureCheck] = {}

    def __call__(self, path: str | os.PathLike[str] | None) -> Policy:
        policy = load_policy(path)
        args = argparse.Namespace(**vars(self._args))
        args.policy = None if path is None else os.fspath(path)
        problems: list[str] = []
        info = check_policy_signature(args, None if path is None else policy, warn=problems.append)
        self._checks.pop(policy.hash, None)
        self._checks[policy.hash] = SignatureCheck(info, problems[0] if problems else None)
        while len(self._checks) > self._KEEP:
            del self._checks[next(iter(self._checks))]
        return policy

    def check_for(self, policy_hash: str) -> SignatureCheck:
        return self._checks.get(policy_hash, SignatureCheck(None))

    def audit_detail(self, policy_hash: str) -> dict[str, Any]:
        check = self.check_for(policy_hash)
        detail = signature_audit_detail(check.info)
        if check.problem is not None:
            detail["signature_problem"] = check.problem
        return detail
