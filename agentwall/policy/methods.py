"""Which JSON-RPC methods pass when the policy does not say.

Methods that carry a target are judged by their own rules instead:
``tools/call`` by ``tools:``, ``resources/read`` and ``resources/subscribe``
by ``resources:``, ``prompts/get`` by ``prompts:``.  Everything else is looked
up here by who sent it.  A method in neither table (and not in the policy's
``methods:``) gets ``default_action``.

The defaults let a normal session work: the lifecycle, ping, listing,
completion, logging, progress/cancellation and list-changed notifications.
From servers, ``roots/list``, ``sampling/createMessage`` and
``elicitation/create`` pass by default because MCP already requires the
client to have offered each capability and to keep a person in the loop for
sampling and elicitation; a policy that wants them off says
``methods: {sampling/createMessage: deny}``.
"""

from __future__ import annotations

from agentwall.types import Origin

TARGETED: frozenset[str] = frozenset(
    {"tools/call", "resources/read", "resources/subscribe", "prompts/get"}
)

_BOTH = frozenset(
    {
        "ping",
        "notifications/cancelled",
        "notifications/progress",
        # Tasks (2025-11-25): polling and fetching the result of a call that
        # was itself already judged as tools/call.
        "tasks/get",
        "tasks/result",
        "tasks/list",
        "tasks/cancel",
        "notifications/tasks/status",
    }
)

CLIENT_DEFAULTS: frozenset[str] = _BOTH | frozenset(
    {
        "initialize",
        "notifications/initialized",
        "notifications/roots/list_changed",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "resources/unsubscribe",
        "prompts/list",
        "completion/complete",
        "logging/setLevel",
        # 2026-07-28
        "server/discover",
        "subscriptions/listen",
    }
)

SERVER_DEFAULTS: frozenset[str] = _BOTH | frozenset(
    {
        "notifications/message",
        "notifications/resources/updated",
        "notifications/resources/list_changed",
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
        "notifications/elicitation/complete",
        # 2026-07-28: the server's answer that a subscriptions/listen took.
        "notifications/subscriptions/acknowledged",
        "roots/list",
        "sampling/createMessage",
        "elicitation/create",
    }
)


def builtin_allows(method: str, origin: Origin) -> bool:
    table = CLIENT_DEFAULTS if origin == "client" else SERVER_DEFAULTS
    return method in table


ALL_KNOWN: frozenset[str] = CLIENT_DEFAULTS | SERVER_DEFAULTS | TARGETED
