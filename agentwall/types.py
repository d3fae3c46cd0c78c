"""The small frozen records that pass between AgentWall's parts.

Data flows one way: bytes -> frame/parse -> ``Call`` -> evaluate -> ``Decision``
-> ``AuditEvent`` -> forward/respond.  Every part that crosses a process
boundary encodes these with msgspec, so they stay plain and frozen.

Fields may be added (with defaults) as features land; never remove or rename
one without updating every producer and consumer, and the audit format docs.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Transport = Literal["http", "stdio"]

# Who sent the message being judged.  Server->client requests (sampling,
# elicitation, roots) are judged too, under the policy's ``methods``.
Origin = Literal["client", "server"]

MessageKind = Literal["request", "notification", "response"]

# What happens after a denial, in both shells (``start`` and ``wrap``).
KillMode = Literal["none", "connection", "process", "both"]
KILL_MODES: tuple[KillMode, ...] = ("none", "connection", "process", "both")

# allow/deny today.  log = allow and flag; redact = pass with ``redactions``
# masked; approve = hold for a person.  Consumers that do not understand a
# verdict must treat it as deny (fail closed).
Verdict = Literal["allow", "deny", "log", "redact", "approve"]

PASSING_VERDICTS: frozenset[str] = frozenset({"allow", "log", "redact"})


class Identity(msgspec.Struct, frozen=True, gc=False):
    """Who is calling, once a token has been verified (issue 6)."""

    subject: str
    issuer: str
    scopes: tuple[str, ...] = ()
    # Stable digest of the claims that policy rules look at; part of the
    # decision-cache key so two callers with different groups never share an
    # entry.
    claims_class: str = ""
    claims: dict[str, Any] = msgspec.field(default_factory=dict)


class Call(msgspec.Struct, frozen=True):
    """One JSON-RPC message, parsed and classified, ready to be judged.

    ``params`` is the decoded ``params`` member exactly as the upstream will
    receive it (the proxy forwards its own re-encoding of this value, never the
    client's bytes).  ``params_json`` is that canonical encoding.
    """

    call_id: str
    session: str
    transport: Transport
    origin: Origin
    kind: MessageKind
    rpc_id: int | str | None
    method: str
    # tools/call -> tool name; resources/read -> URI; prompts/get -> prompt name;
    # "" for every other method.
    target: str
    params: Any
    params_json: bytes
    identity: Identity | None = None
    received_ns: int = 0
    # Who the caller is across sessions, the key of the policy's ``client:``
    # rate limit: "sub:<issuer>|<subject>" when identity is verified, else
    # "peer:<address>" (HTTP).  None: the session is its own client (wrap).
    client: str | None = None


class Decision(msgspec.Struct, frozen=True):
    call_id: str
    verdict: Verdict
    # None means the policy's default_action decided.
    rule_id: str | None
    # Safe to show the agent: never echoes secret values.
    reason: str
    # RFC 6901 JSON pointer to the offending value, relative to ``params``.
    pointer: str | None
    policy_hash: str
    # Safe Mode / policy rule category, e.g. "sensitive_path", "ssrf".
    category: str | None = None
    # False when the verdict depended on state (rate limits, time).
    cacheable: bool = True
    # JSON pointers to mask, for verdict == "redact".
    redactions: tuple[str, ...] = ()
    eval_ns: int = 0
    # True when this decision came from the shared decision cache.
    cached: bool = False
    # For an identity refusal a better token could fix (category
    # "identity_scope"/"identity_claims", see agentwall.identity.rules): every
    # scope the call needs, for the HTTP 403 insufficient_scope challenge.
    required_scopes: tuple[str, ...] = ()
    # Set on rate-limit denials (category "rate_limit"): when a retry can
    # succeed.  The front-end puts it in the -32029 error's data.
    retry_after_ms: int | None = None
    # True when the evaluator that decided also made the decision's audit
    # entry durable (start's evaluator workers write their own entries), so
    # the shell writes none.  Never stored in the decision cache.
    durable: bool = False


AuditEventKind = Literal[
    "decision",
    "proxy_start",
    "proxy_stop",
    "policy_loaded",
    "policy_reload_failed",
    "dry_run_active",
    "recovery",
    "key_changed",
    "log_rotated",
    "error",
]

AuditOutcome = Literal["allow", "deny", "dry_run_deny", "error", "log", "redact", "approve"]


class AuditEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a shell hands to the audit writer.  The writer adds seq, ts, key id,
    prev and mac; see ``agentwall.audit.record`` for the on-disk form."""

    event: AuditEventKind
    session: str | None = None
    transport: Transport | None = None
    subject: str | None = None
    issuer: str | None = None
    call_id: str | None = None
    rpc_id: int | str | None = None
    method: str | None = None
    target: str | None = None
    decision: AuditOutcome | None = None
    rule_id: str | None = None
    reason: str | None = None
    pointer: str | None = None
    args_sha256: str | None = None
    latency_us: int | None = None
    policy_hash: str | None = None
    cached: bool = False
    # Only with --log-params, after secret masking.
    params: Any = None
    masked: tuple[str, ...] = ()
    # Free-form structured detail for non-decision events (reload errors,
    # recovery reports).
    detail: dict[str, Any] | None = None
    # Safe Mode / policy rule category of a deny (Decision.category).
    category: str | None = None
