"""How a decision is shown: to the agent, to the upstream (redactions) and
to the audit log.

Both shells (the HTTP front-end and ``wrap``) answer a denial the same way
and name methods, tools and ids in audit entries the same way, so the two
live here, once, in the pure core.  Importing this module stays cheap (the
``wrap`` command line imports it): Safe Mode's secret patterns load on the
first string that is not in the cache.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import msgspec

from agentwall.types import Decision


def denial_message(decision: Decision) -> str:
    """The JSON-RPC error ``message`` of a denied call."""
    rule = decision.rule_id or "default_action"
    return f"Denied by policy rule {rule}: {decision.reason}"


def denial_data(decision: Decision) -> dict[str, Any]:
    """The JSON-RPC error ``data`` of a denied call: enough for the agent (or
    its operator) to find the audit entry and the rule."""
    data: dict[str, Any] = {
        "decision_id": decision.call_id,
        "rule": decision.rule_id,
        "pointer": decision.pointer,
        "reason": decision.reason,
    }
    if decision.category:
        data["category"] = decision.category
    if decision.retry_after_ms is not None:
        data["retry_after_ms"] = decision.retry_after_ms
    return data


def apply_redactions(params: Any, pointers: Iterable[str]) -> Any:
    """Copy of ``params`` with the value at each RFC 6901 pointer replaced."""
    out = msgspec.json.decode(msgspec.json.encode(params))
    for ptr in pointers:
        if not ptr.startswith("/"):
            continue
        parts = [p.replace("~1", "/").replace("~0", "~") for p in ptr[1:].split("/")]
        node = out
        for part in parts[:-1]:
            if isinstance(node, dict):
                node = node.get(part)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = None
                break
        last = parts[-1]
        if isinstance(node, dict) and last in node:
            node[last] = "[REDACTED]"
        elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = "[REDACTED]"
    return out


# Masking is a pure function of the text, and every entry names a method and
# usually a tool: the same few short strings, each costing a Safe Mode regex
# scan (more than sealing the entry).  Bounded, so a peer sending endless new
# names only ever costs the scan.
_SCRUB_CACHE_SIZE: Final = 4096
_SCRUB_CACHE_MAX_LEN: Final = 512
_scrub_cache: dict[str, str] = {}


def scrubbed(value: Any) -> Any:
    """A string an audit entry names (target, method, string id, a refusal's
    text) with any secret masked: the call may have been denied *for*
    carrying it, and the log must not become the leak (docs/policy.md,
    secret masking).  Other values are returned as they are."""
    if type(value) is not str:
        return value
    cached = _scrub_cache.get(value)
    if cached is not None:
        return cached
    from agentwall.policy.secrets import mask_secrets

    masked: str = mask_secrets(value)[0]
    if len(value) <= _SCRUB_CACHE_MAX_LEN:
        if len(_scrub_cache) >= _SCRUB_CACHE_SIZE:
            _scrub_cache.clear()
        _scrub_cache[value] = masked
    return masked


__all__ = ["apply_redactions", "denial_data", "denial_message", "scrubbed"]
