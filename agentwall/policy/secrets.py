"""Secret formats: the Safe Mode rules of category ``secret``, and masking.

The same rules serve two purposes.  Safe Mode denies a call whose arguments
carry a secret out (a prompt-injected agent pasting a key into a web request
is the classic exfiltration).  ``mask_secrets`` replaces each secret with a
marker before parameters are written to the audit log (``--log-params``), so
the log never becomes the leak.

Patterns are the providers' documented prefixes with a minimum length, which
keeps false positives on ordinary text rare; they are matched with RE2 and are
case-sensitive, as the formats are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec

from agentwall.policy.patterns import compile_re2


@dataclass(frozen=True, slots=True)
class SecretRule:
    id: str
    label: str  # what the reason calls it; never the value
    source: str


SECRET_RULES: tuple[SecretRule, ...] = (
    SecretRule(
        "safe_mode.secret.private_key",
        "a private key block",
        # The whole block, so masking removes the key body, not only its header.
        r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:(?s:.)*?-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|(?s:.)*)",
    ),
    SecretRule(
        "safe_mode.secret.aws",
        "an AWS access key",
        r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b"
        r"|(?i:aws_?secret_?access_?key)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{40}\b",
    ),
    SecretRule(
        "safe_mode.secret.github",
        "a GitHub token",
        r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}\b|\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
    ),
    SecretRule(
        "safe_mode.secret.slack",
        "a Slack token or webhook",
        r"\bxox[abposre]-[A-Za-z0-9-]{10,}|\bxapp-[0-9]-[A-Za-z0-9-]{10,}"
        r"|hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]{20,}",
    ),
    SecretRule(
        "safe_mode.secret.stripe",
        "a Stripe secret key",
        r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}\b|\bwhsec_[A-Za-z0-9]{24,}\b",
    ),
    SecretRule(
        "safe_mode.secret.anthropic",
        "an Anthropic API key",
        r"\bsk-ant-[A-Za-z0-9_-]{20,}",
    ),
    SecretRule(
        "safe_mode.secret.openai",
        "an OpenAI API key",
        r"\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}"
        r"|\bsk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}\b|\bsk-[A-Za-z0-9]{40,64}\b",
    ),
    SecretRule(
        "safe_mode.secret.google",
        "a Google API key or OAuth secret",
        r"\bAIza[0-9A-Za-z_-]{35}|\bGOCSPX-[A-Za-z0-9_-]{28}|\bya29\.[0-9A-Za-z_-]{20,}",
    ),
)

SECRET_RULE_IDS: tuple[str, ...] = tuple(r.id for r in SECRET_RULES)

_COMPILED = tuple((rule, compile_re2(rule.source)) for rule in SECRET_RULES)
ANY_SOURCE: Final = "|".join(f"(?:{r.source})" for r in SECRET_RULES)
_ANY = compile_re2(ANY_SOURCE)


def find_secret(text: str, disabled: frozenset[str] = frozenset()) -> SecretRule | None:
    """The first secret rule (in table order) that matches ``text``."""
    if not _ANY.contains(text):
        return None
    for rule, rx in _COMPILED:
        if rule.id not in disabled and rx.contains(text):
            return rule
    return None


def shown(text: str) -> str:
    """A caller-supplied name as it may appear in a reason: quoted, escaped,
    cut to 64 characters, and never a secret (reasons reach the agent and the
    audit log unmasked)."""
    try:
        if find_secret(text) is not None:
            return "<a name containing a secret>"
    except UnicodeError:
        return "<a name that is not valid Unicode>"
    # ascii() makes confusables visible: a Cyrillic "е" shows as \u0435.
    return ascii(text if len(text) <= 64 else text[:64] + "...")


def _mask_text(text: str) -> str | None:
    if not _ANY.contains(text):
        return None
    out = text
    for rule, rx in _COMPILED:
        out = rx.sub(f"[MASKED:{rule.id.rsplit('.', 1)[-1]}]", out)
    return out if out != text else None


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def mask_secrets(value: Any) -> tuple[Any, tuple[str, ...]]:
    """Return ``value`` with every secret replaced by ``[MASKED:<kind>]``, and
    the RFC 6901 pointers of the strings (or object members, when a key held
    the secret) that were changed.  The input is never modified; unchanged
    subtrees are shared.  Strings that cannot be matched (lone surrogates)
    are replaced whole, since they cannot be inspected.
    """
    pointers: list[str] = []
    masked = _mask(value, "", pointers, 0)
    return masked, tuple(pointers)


# ``--log-params`` copies parameters into every decision entry; above this
# size they are left out (the entry's args_sha256 still identifies them), so
# one 16 MiB call cannot make a 16 MiB entry, nor a flood of them a huge log.
LOG_PARAMS_MAX_BYTES: Final = 64 * 1024


def params_for_log(
    params: Any, max_bytes: int = LOG_PARAMS_MAX_BYTES
) -> tuple[Any, tuple[str, ...]]:
    """What ``--log-params`` writes: the params with secrets masked, or,
    over ``max_bytes`` of JSON, a marker saying they were left out and why."""
    try:
        size = len(msgspec.json.encode(params))
    except (TypeError, ValueError, OverflowError):
        size = max_bytes + 1  # not JSON-encodable as is: never copied
    if size > max_bytes:
        return {
            "omitted": f"params are {size} bytes, over the {max_bytes}-byte --log-params "
            "limit; args_sha256 identifies them"
        }, ()
    return mask_secrets(params)


_MAX_DEPTH = 128  # recursion stays far below the interpreter limit


def _mask(value: Any, pointer: str, pointers: list[str], depth: int) -> Any:
    if isinstance(value, str):
        try:
            new = _mask_text(value)
        except UnicodeError:
            pointers.append(pointer)
            return "[MASKED:unreadable]"
        if new is None:
            return value
        pointers.append(pointer)
        return new
    if depth >= _MAX_DEPTH and isinstance(value, dict | list | tuple):
        # Deeper than any call the evaluator lets through; do not recurse.
        pointers.append(pointer)
        return "[MASKED:too-deep]"
    if isinstance(value, dict):
        changed = False
        out: dict[Any, Any] = {}
        for key, item in value.items():
            new_key = key
            if isinstance(key, str):
                try:
                    masked_key = _mask_text(key)
                except UnicodeError:
                    masked_key = "[MASKED:unreadable]"
                if masked_key is not None:
                    new_key = masked_key
                    pointers.append(f"{pointer}/{_escape(masked_key)}")
                    changed = True
            child = f"{pointer}/{_escape(str(new_key))}"
            new_item = _mask(item, child, pointers, depth + 1)
            changed = changed or new_item is not item
            out[new_key] = new_item
        return out if changed else value
    if isinstance(value, list | tuple):
        items = [_mask(item, f"{pointer}/{i}", pointers, depth + 1) for i, item in enumerate(value)]
        if any(new is not old for new, old in zip(items, value, strict=True)):
            return items
        return value
    return value
