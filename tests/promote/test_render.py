"""promote's text and JSON output."""

from __future__ import annotations

import json

from agentwall.promote import readiness, render, signing

INFO = signing.SignatureInfo(
    key_id="sha256:" + "ab" * 32,
    policy_hash="cd" * 32,
    signed_at="2026-01-27T10:00:00Z",
    agentwall_version="0.1.0",
    demo=True,
    trusted=False,
)


def test_blocked_text_lists_findings_fixes_and_score() -> None:
    outcome = render.PromoteOutcome(
        policy_path=None, policy_hash=None, review=readiness.review(None)
    )
    text = render.as_text(outcome)
    assert "BLOCKING no_policy:" in text
    assert "fix: write a policy" in text
    assert "risk score: 15/100 (low)" in text
    assert "blocking   15 (max 60)" in text
    assert text.rstrip().endswith("result: NOT READY: 1 blocking finding(s); not signed")


def test_demo_signature_is_marked_in_text_and_json() -> None:
    view = readiness.PolicyView(default_action="deny", session_rate=1, client_rate=1)
    outcome = render.PromoteOutcome(
        policy_path="p.yaml",
        policy_hash=INFO.policy_hash,
        review=readiness.review(view),
        signature_path="p.yaml.sig",
        signature=INFO,
    )
    text = render.as_text(outcome)
    assert "result: READY; signed -> p.yaml.sig" in text
    assert "DEMO" in text
    assert "--require-signed refuses it" in text
    document = render.as_json(outcome)
    json.dumps(document)
    assert document["signature"] == {
        "path": "p.yaml.sig",
        "key_id": INFO.key_id,
        "demo": True,
        "signed_at": INFO.signed_at,
    }
    assert document["ready"] is True
    assert document["findings"][0]["code"] == "nothing_allowed"
    assert document["score"]["breakdown"][0]["name"] == "exposure"
