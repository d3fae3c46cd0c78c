"""mask_secrets: what the audit log uses for --log-params."""

from __future__ import annotations

import pytest

from agentwall.policy.secrets import SECRET_RULES, find_secret, mask_secrets

GITHUB = "ghp_" + "A1b2C3d4E5" * 3 + "abcdef"
SAMPLES = {
    "safe_mode.secret.private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n"
    "-----END OPENSSH PRIVATE KEY-----",
    "safe_mode.secret.aws": "AKIAIOSFODNN7EXAMPLE",
    "safe_mode.secret.github": GITHUB,
    "safe_mode.secret.slack": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "safe_mode.secret.stripe": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
    "safe_mode.secret.anthropic": "sk-ant-api03-" + "x" * 90,
    "safe_mode.secret.openai": "sk-proj-" + "Ab1" * 20,
    "safe_mode.secret.google": "AIza" + "SyD" * 11 + "xy",
}


def test_every_rule_has_a_sample() -> None:
    assert set(SAMPLES) == {r.id for r in SECRET_RULES}


@pytest.mark.parametrize(("rule_id", "secret"), sorted(SAMPLES.items()))
def test_each_format_is_found_and_masked(rule_id: str, secret: str) -> None:
    found = find_secret(f"token={secret} trailing")
    assert found is not None
    assert found.id == rule_id
    masked, pointers = mask_secrets({"env": {"TOKEN": f"prefix {secret} suffix"}, "n": 1})
    assert pointers == ("/env/TOKEN",)
    assert secret not in masked["env"]["TOKEN"]
    assert masked["env"]["TOKEN"].startswith("prefix [MASKED:")
    assert masked["n"] == 1


def test_mask_leaves_clean_values_identical_and_input_untouched() -> None:
    value = {"a": ["x", {"b": "y"}], "c": 3, "d": None}
    masked, pointers = mask_secrets(value)
    assert masked is value
    assert pointers == ()
    dirty = {"list": ["ok", GITHUB], "k/e~y": GITHUB}
    masked, pointers = mask_secrets(dirty)
    assert pointers == ("/list/1", "/k~1e~0y")
    assert dirty["list"][1] == GITHUB
    assert masked["list"] == ["ok", "[MASKED:github]"]


def test_secret_in_a_key_is_masked_too() -> None:
    masked, pointers = mask_secrets({GITHUB: 1})
    assert GITHUB not in repr(masked)
    assert pointers == ("/[MASKED:github]",)


def test_private_key_body_is_removed() -> None:
    text = "before\n" + SAMPLES["safe_mode.secret.private_key"] + "\nafter"
    masked, _ = mask_secrets(text)
    assert "b3BlbnNzaC1rZXk" not in masked
    assert masked.startswith("before\n")
    assert masked.endswith("\nafter")


def test_unreadable_and_deep_values_do_not_raise() -> None:
    masked, pointers = mask_secrets({"s": "\ud800"})
    assert masked == {"s": "[MASKED:unreadable]"}
    assert pointers == ("/s",)
    deep: list[object] = []
    cur = deep
    for _ in range(2000):
        nxt: list[object] = []
        cur.append(nxt)
        cur = nxt
    _masked, pointers = mask_secrets(deep)
    assert len(pointers) == 1


@pytest.mark.parametrize(
    "benign",
    [
        "sk-short",
        "AKIA",
        "ghp_short",
        "task-ant-colony",
        "the sk_live_ prefix is documented",
        "ssh-rsa AAAAB3NzaC1yc2E user@host",
        "-----BEGIN PUBLIC KEY-----",
    ],
)
def test_benign_text_is_not_a_secret(benign: str) -> None:
    assert find_secret(benign) is None
    assert mask_secrets(benign) == (benign, ())


def test_params_for_log_masks_small_params_and_omits_oversize_ones() -> None:
    from agentwall.policy.secrets import LOG_PARAMS_MAX_BYTES, params_for_log

    key = "sk-ant-api03-" + "A" * 80
    small = {"name": "fetch", "arguments": {"token": key}}
    logged, pointers = params_for_log(small)
    assert logged == mask_secrets(small)[0]
    assert pointers == ("/arguments/token",)
    big = {"name": "write", "arguments": {"text": "x" * LOG_PARAMS_MAX_BYTES, "token": key}}
    logged, pointers = params_for_log(big)
    assert pointers == ()
    assert set(logged) == {"omitted"}
    assert "--log-params limit" in logged["omitted"]
    assert key not in str(logged)
    # The limit is on the JSON size, inclusive.
    edge = {"t": "y" * 100}
    size = len(b'{"t":""}') + 100
    assert params_for_log(edge, max_bytes=size)[0] == edge
    assert "omitted" in params_for_log(edge, max_bytes=size - 1)[0]
