"""``agentwall promote``: review a policy for production, score it, and sign it.

Signs only when the review finds nothing blocking.  Without ``--key`` the
signature uses an ephemeral DEMO key, which ``--require-signed`` refuses.
``--verify`` checks an existing signature the way ``start --require-signed``
does.  Exit codes: 0 ready (and signed or verified), 1 blocking findings
(nothing written), 2 unusable input or a refused signature.  See docs/promote.md.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

import msgspec

from agentwall import __version__
from agentwall.errors import ConfigError
from agentwall.policy import Policy, load_policy
from agentwall.promote import enforce, keyfiles, readiness, render, signing
from agentwall.promote.view import view_of

HELP = "Review a policy for production, score its risk, and sign it (Ed25519)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policy", metavar="P", help="the policy YAML to promote (without it: the no-policy run)"
    )
    parser.add_argument(
        "--key", metavar="KEYBASE.key", help="signing key (default: an ephemeral DEMO key)"
    )
    parser.add_argument("--out", metavar="P.sig", help="signature file (default: P.sig)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--no-sign", action="store_true", help="review only; write nothing")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="check the existing signature as start --require-signed would (needs --trusted-key)",
    )
    # --verify is promote's --require-signed.
    enforce.add_signing_arguments(parser, with_require_signed=False)


def run(args: argparse.Namespace) -> int:
    policy = load_policy(args.policy)
    review = readiness.review(view_of(policy))
    outcome = render.PromoteOutcome(
        policy_path=args.policy,
        policy_hash=None if args.policy is None else policy.hash,
        review=review,
        sign_skipped=args.no_sign,
    )
    if args.verify:
        if args.key or args.out or args.no_sign:
            raise ConfigError("--verify checks a signature; it takes no --key, --out or --no-sign")
        args.require_signed = True
        verified = enforce.check_policy_signature(args, policy)
        outcome = msgspec.structs.replace(outcome, verified=verified)
    elif review.ready and not args.no_sign:
        outcome = _sign(args, policy, outcome)
    if args.format == "json":
        print(json.dumps(render.as_json(outcome), indent=2))
    else:
        print(render.as_text(outcome), end="")
    return 0 if review.ready else 1


def _sign(
    args: argparse.Namespace, policy: Policy, outcome: render.PromoteOutcome
) -> render.PromoteOutcome:
    demo = args.key is None
    # The ephemeral key lives only in this process: nothing can ever trust it.
    key = signing.generate_private_key() if demo else keyfiles.read_private_key(args.key)
    document = signing.sign_policy(
        policy.hash, key, signed_at=datetime.now(UTC), agentwall_version=__version__, demo=demo
    )
    path = keyfiles.write_signature(
        args.out or keyfiles.default_signature_path(args.policy), document
    )
    # Read back what was written, through the same check the proxy uses.
    info = signing.verify_policy_signature(
        policy.hash, keyfiles.read_signature(path), [key.public_key()], allow_demo=True
    )
    return msgspec.structs.replace(outcome, signature_path=str(path), signature=info)
