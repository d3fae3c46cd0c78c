"""How ``agentwall promote`` shows its result, as text or as one JSON object (pure)."""

from __future__ import annotations

import textwrap
from typing import Any

import msgspec

from agentwall.promote.readiness import Review
from agentwall.promote.signing import SignatureInfo


class PromoteOutcome(msgspec.Struct, frozen=True):
    """Everything ``promote`` decided, for either output format."""

    policy_path: str | None
    policy_hash: str | None
    review: Review
    # Where the signature went (None: not signed, because blocked or --no-sign).
    signature_path: str | None = None
    signature: SignatureInfo | None = None
    # --no-sign: the review ran, nothing was written.
    sign_skipped: bool = False
    # --verify: the result of checking an existing signature.
    verified: SignatureInfo | None = None


def as_json(outcome: PromoteOutcome) -> dict[str, Any]:
    review = outcome.review
    signature = None
    if outcome.signature is not None:
        signature = {
            "path": outcome.signature_path,
            "key_id": outcome.signature.key_id,
            "demo": outcome.signature.demo,
            "signed_at": outcome.signature.signed_at,
        }
    result: dict[str, Any] = {
        "policy": outcome.policy_path,
        "policy_sha256": outcome.policy_hash,
        "ready": review.ready,
        "blocking": not review.ready,
        "findings": [msgspec.to_builtins(f) for f in review.findings],
        "score": msgspec.to_builtins(review.score),
        "signature": signature,
    }
    if outcome.verified is not None:
        result["verified"] = msgspec.to_builtins(outcome.verified)
    return result


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, width=96, initial_indent=indent, subsequent_indent=indent) or [
        indent
    ]


def as_text(outcome: PromoteOutcome) -> str:
    review = outcome.review
    lines = [
        f"policy:        {outcome.policy_path or '(none: Safe Mode only)'}",
        f"policy sha256: {outcome.policy_hash or '-'}",
        "",
    ]
    blocking = len(review.blocking)
    warnings = len(review.findings) - blocking
    if review.findings:
        lines.append(f"findings: {blocking} blocking, {warnings} warning(s)")
        for finding in review.findings:
            label = "BLOCKING" if finding.severity == "blocking" else "warning "
            where = f"[{finding.tool}] " if finding.tool else ""
            lines.extend(_wrap(f"{label} {finding.code}: {where}{finding.reason}", "  "))
            lines.extend(_wrap(f"fix: {finding.fix}", "           "))
    else:
        lines.append("findings: none")
    score = review.score
    lines.extend(["", f"risk score: {score.total}/100 ({score.level})"])
    for part in score.breakdown:
        lines.append(f"  {part.name:<9} {part.points:>3} (max {part.cap}): {part.detail}")
    lines.append("")
    if outcome.verified is not None:
        lines.append(
            f"signature: VERIFIED, key {outcome.verified.key_id}, "
            f"signed {outcome.verified.signed_at}"
        )
    if not review.ready:
        lines.append(f"result: NOT READY: {blocking} blocking finding(s); not signed")
    elif outcome.signature is not None:
        info = outcome.signature
        lines.append(f"result: READY; signed -> {outcome.signature_path}")
        lines.append(f"  key id:    {info.key_id}")
        lines.append(f"  signed at: {info.signed_at}")
        if info.demo:
            lines.append(
                "  DEMO: signed with an ephemeral key that was not saved. This signature "
                "proves nothing;"
            )
            lines.append(
                "  DEMO: --require-signed refuses it. Use: agentwall keygen --out KEYBASE; "
                "agentwall promote --key KEYBASE.key"
            )
    elif outcome.sign_skipped:
        lines.append("result: READY (not signed: --no-sign)")
    else:
        lines.append("result: READY")
    return "\n".join(lines) + "\n"
