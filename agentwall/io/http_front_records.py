"""The msgspec Structs of ``agentwall.io.http_front``, kept uncompiled (agentwall/compiled.py)."""

from __future__ import annotations

import msgspec

from agentwall.core import mcp_http as mh
from agentwall.core.jsonrpc import (
    Message,
)
from agentwall.types import (
    AuditOutcome,
    Call,
    Decision,
    KillMode,
)


class FrontConfig(msgspec.Struct, frozen=True):
    kill_mode: KillMode = "none"
    dry_run: bool = False
    filter_tools_list: bool = True
    log_params: bool = False
    origin_policy: mh.OriginPolicy = mh.OriginPolicy()
    max_body_bytes: int = 4 * 1024 * 1024
    max_header_bytes: int = 32 * 1024
    max_response_bytes: int = 64 * 1024 * 1024
    # A request must arrive completely within this many seconds of its first
    # byte (slowloris); an idle keep-alive connection closes after idle_timeout.
    request_timeout: float = 30.0
    idle_timeout: float = 75.0
    max_connections: int = 4096
    # Messages being judged or forwarded at once; beyond it: 503 at once.
    max_inflight: int = 2048
    upstream_timeout: float = 60.0
    # Longest quiet gap inside an upstream SSE stream (None: no limit; tools
    # may run for a long time between progress events).
    upstream_stream_idle: float | None = None
    agent_pid: int | None = None
    agent_pid_file: str | None = None
    # While calls are in flight, poll instead of sleeping for up to this long
    # after a request arrives (agentwall.io.busy_poll; 0: off).
    busy_poll_us: int = 1000


class Judgement(msgspec.Struct):
    # None when the message was refused before it could be judged (params
    # MCP does not allow): nothing to audit, a -32602 error instead.
    call: Call | None
    decision: Decision | None
    outcome: AuditOutcome
    passes: bool
    # For a message that does not pass: the JSON-RPC error and HTTP status.
    error: bytes | None = None
    status: int = 200
    headers: tuple[tuple[bytes, bytes], ...] = ()
    # Set when the verdict was redact: the params to forward instead.
    forward: Message | None = None
