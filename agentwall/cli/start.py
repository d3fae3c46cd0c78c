"""``agentwall start``: the MCP HTTP sidecar (issue 4)."""

from __future__ import annotations

import argparse
import os

from agentwall import compiled
from agentwall.errors import ConfigError
from agentwall.types import KILL_MODES

HELP = "Run the MCP HTTP sidecar: judge, audit and forward every message to --mcp-url."

_TRUE = {"1", "true", "yes", "on"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from agentwall.promote.enforce import add_signing_arguments

    a = parser.add_argument
    a("--policy", metavar="P", help="policy YAML (default: Safe Mode only)")
    a(
        "--listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="where agents connect (default %(default)s)",
    )
    a(
        "--mcp-url",
        default="http://127.0.0.1:3000/mcp",
        metavar="URL",
        help="upstream MCP server (default %(default)s)",
    )
    a(
        "--log-path",
        default="agentwall-audit.log",
        metavar="PATH",
        help="audit log (default %(default)s)",
    )
    a(
        "--kill-mode",
        default="none",
        choices=KILL_MODES,
        help="on a denial (default none)",
    )
    a(
        "--dry-run",
        action="store_true",
        help="log dry_run_deny and forward anyway (also AGENTWALL_DRY_RUN=true)",
    )
    a(
        "--workers",
        type=int,
        default=2,
        metavar="N",
        help="pre-forked evaluator workers; 0 evaluates in-process",
    )
    pid = parser.add_mutually_exclusive_group()
    pid.add_argument(
        "--agent-pid",
        type=int,
        metavar="PID",
        help="the agent to SIGKILL (kill modes process/both)",
    )
    pid.add_argument(
        "--agent-pid-file", metavar="F", help="file holding the agent's PID, read at kill time"
    )
    a("--report-path", metavar="R", help="write the session report here at shutdown")
    a("--audit-key-file", metavar="F", help="HMAC key for the audit chain")
    a("--log-params", action="store_true", help="log call parameters (after secret masking)")
    a("--log-max-bytes", type=int, metavar="N", help="rotate the audit log after N bytes")
    a(
        "--no-filter-tools-list",
        dest="filter_tools_list",
        action="store_false",
        help="show agents every tool",
    )
    a("--no-cache", dest="cache", action="store_false", help="switch the shared decision cache off")
    a(
        "--oidc-issuer",
        metavar="URL",
        help="override the policy's identity issuer (identity, issue 6)",
    )
    a(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="browser Origin to allow (repeatable)",
    )
    a(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST",
        help="Host header to allow besides loopback",
    )
    a(
        "--upstream-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="wait this long for the upstream's response head",
    )
    a(
        "--eval-timeout",
        type=float,
        default=2.0,
        metavar="S",
        help="per-call evaluation deadline (then deny)",
    )
    a(
        "--max-body-bytes",
        type=int,
        default=4 * 1024 * 1024,
        metavar="N",
        help="largest request body (413 beyond)",
    )
    a("--max-inflight", type=int, default=2048, metavar="N", help="messages in flight before 503")
    a(
        "--request-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="a request must arrive within S s",
    )
    a(
        "--idle-timeout",
        type=float,
        default=75.0,
        metavar="S",
        help="close idle keep-alive connections",
    )
    a(
        "--drain-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="on SIGTERM, wait this long for calls in flight",
    )
    a(
        "--busy-poll-us",
        type=int,
        default=1000,
        metavar="N",
        help="while calls are in flight, poll instead of sleeping for up to N µs after each "
        "request: lower latency at low load for up to a core of CPU (0: off; docs/http.md)",
    )
    a(
        "--audit-from",
        choices=("front-end", "workers"),
        default="front-end",
        help="who writes a decision's audit entry: the front-end once the worker has "
        "answered (default: the lower latency at low load on 2 cores), or the worker "
        "that made it, before answering (less front-end CPU per call; docs/audit.md)",
    )

    a(
        "--upstream-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="the proxy's own credential header for the upstream (repeatable)",
    )
    a(
        "--upstream-token-file",
        metavar="F",
        help="send 'Authorization: Bearer <F's content>' upstream (re-read when F changes)",
    )
    add_signing_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from agentwall.io.supervisor import StartConfig, run_start
    from agentwall.promote.enforce import SignedPolicyLoader

    dry_run = bool(args.dry_run) or os.environ.get("AGENTWALL_DRY_RUN", "").strip().lower() in _TRUE
    if args.workers < 0:
        raise ConfigError("--workers must be 0 or more")
    if not 0 <= args.busy_poll_us <= 1_000_000:
        raise ConfigError("--busy-poll-us must be between 0 and 1000000")
    stale = compiled.stale_modules()
    if stale:
        # Python would run the compiled build, not the source beside it.
        raise ConfigError(
            f"the compiled modules {', '.join(stale)} were built from another source "
            "than the one installed: reinstall AgentWall (pip install -e .)"
        )
    config = StartConfig(
        policy_path=args.policy,
        listen=args.listen,
        mcp_url=args.mcp_url,
        log_path=args.log_path,
        kill_mode=args.kill_mode,
        dry_run=dry_run,
        workers=args.workers,
        agent_pid=args.agent_pid,
        agent_pid_file=args.agent_pid_file,
        report_path=args.report_path,
        audit_key_file=args.audit_key_file,
        log_params=args.log_params,
        log_max_bytes=args.log_max_bytes,
        filter_tools_list=args.filter_tools_list,
        cache=args.cache,
        oidc_issuer=args.oidc_issuer,
        upstream_headers=tuple(args.upstream_header),
        upstream_token_file=args.upstream_token_file,
        allowed_origins=tuple(args.allowed_origin),
        allowed_hosts=tuple(args.allowed_host),
        upstream_timeout=args.upstream_timeout,
        eval_timeout=args.eval_timeout,
        max_body_bytes=args.max_body_bytes,
        max_inflight=args.max_inflight,
        request_timeout=args.request_timeout,
        idle_timeout=args.idle_timeout,
        drain_timeout=args.drain_timeout,
        busy_poll_us=args.busy_poll_us,
        entries_from_workers=args.audit_from == "workers",
    )
    return run_start(config, loader=SignedPolicyLoader(args))
