"""docs/policy.md documents every key the loader accepts and every Safe Mode rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwall.policy import loader
from agentwall.policy.safemode import SAFE_RULE_IDS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text(encoding="utf-8")
KEYS = sorted(
    set(
        loader.TOP_KEYS
        + loader.TOOL_KEYS
        + loader.PARAM_KEYS
        + loader.RESOURCE_KEYS
        + loader.PROMPT_KEYS
        + loader.IDENTITY_KEYS
        + loader.IDENTITY_RULE_KEYS
        + loader.SESSION_KEYS
        + loader.CLIENT_KEYS
        + loader.LIMIT_KEYS
        + loader.SAFE_MODE_KEYS
        + loader.RATE_KEYS
    )
)


@pytest.mark.parametrize("key", KEYS)
def test_every_key_is_documented(key: str) -> None:
    assert f"`{key}`" in DOC


@pytest.mark.parametrize("rule_id", SAFE_RULE_IDS)
def test_every_safe_mode_rule_is_documented(rule_id: str) -> None:
    assert f"`{rule_id}`" in DOC
