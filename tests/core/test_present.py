"""How decisions are shown to the agent and named in the log (both shells)."""

from __future__ import annotations

from agentwall.core import present
from agentwall.types import Decision

KEY = "sk-ant-api03-" + "B" * 80


def _deny(**extra: object) -> Decision:
    return Decision(
        call_id="c-1",
        verdict="deny",
        rule_id="tools.run_command",
        reason="tool not allowed",
        pointer="/arguments/command",
        policy_hash="h",
        **extra,  # type: ignore[arg-type]
    )


def test_denial_message_names_the_rule_or_the_default() -> None:
    assert present.denial_message(_deny()) == (
        "Denied by policy rule tools.run_command: tool not allowed"
    )
    default = Decision("c", "deny", None, "no rule allows it", None, "h")
    assert present.denial_message(default).startswith("Denied by policy rule default_action:")


def test_denial_data_carries_the_audit_handle_and_optional_fields() -> None:
    assert present.denial_data(_deny()) == {
        "decision_id": "c-1",
        "rule": "tools.run_command",
        "pointer": "/arguments/command",
        "reason": "tool not allowed",
    }
    data = present.denial_data(_deny(category="rate_limit", retry_after_ms=250))
    assert data["category"] == "rate_limit"
    assert data["retry_after_ms"] == 250


def test_scrubbed_masks_secrets_in_names_and_leaves_the_rest() -> None:
    assert present.scrubbed(7) == 7
    assert present.scrubbed(None) is None
    assert present.scrubbed("tools/call") == "tools/call"
    masked = present.scrubbed(f"fetch {KEY}")
    assert KEY not in masked
    assert "[MASKED:" in masked
    # Cached answers are the same answers.
    assert present.scrubbed(f"fetch {KEY}") == masked


def test_scrub_cache_stays_bounded() -> None:
    for i in range(present._SCRUB_CACHE_SIZE + 10):
        present.scrubbed(f"tool_{i}")
    assert len(present._scrub_cache) <= present._SCRUB_CACHE_SIZE
    long_name = "x" * (present._SCRUB_CACHE_MAX_LEN + 1)
    present.scrubbed(long_name)
    assert long_name not in present._scrub_cache


def test_apply_redactions_masks_each_pointer_in_a_copy() -> None:
    params = {"arguments": {"a/b": "secret", "list": ["x", "y"], "keep": 1}}
    out = present.apply_redactions(
        params, ["/arguments/a~1b", "/arguments/list/1", "/arguments/missing/deep", "nope"]
    )
    assert out == {"arguments": {"a/b": "[REDACTED]", "list": ["x", "[REDACTED]"], "keep": 1}}
    assert params["arguments"]["a/b"] == "secret"  # the input is not changed
