"""``agentwall wrap``: put AgentWall between an agent host and a stdio MCP server.

Goes in the host's config in place of the server command:
``agentwall wrap --policy P -- npx -y @modelcontextprotocol/server-filesystem /tmp``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from agentwall.errors import ConfigError

HELP = "wrap a stdio MCP server: every message judged by the policy and audited"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from agentwall.core.framing import DEFAULT_MAX_LINE
    from agentwall.io.stdio_wrap import DEFAULT_GRACE_S
    from agentwall.promote.enforce import add_signing_arguments
    from agentwall.types import KILL_MODES

    parser.add_argument("--policy", metavar="P", help="policy file (default: Safe Mode only)")
    parser.add_argument(
        "--log-path",
        metavar="L",
        default="agentwall-audit.log",
        help="audit log file (default: %(default)s)",
    )
    parser.add_argument(
        "--audit-key-file",
        metavar="F",
        help="audit HMAC key (default: $AGENTWALL_AUDIT_KEY or the per-user key)",
    )
    parser.add_argument(
        "--log-max-bytes",
        type=int,
        metavar="N",
        help="rotate the audit log after N bytes (the chain continues in the next file)",
    )
    parser.add_argument(
        "--log-params", action="store_true", help="also log call parameters, with secrets masked"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="log denials as dry_run_deny and forward anyway"
    )
    parser.add_argument(
        "--kill-mode",
        choices=KILL_MODES,
        default="none",
        help="after a denial: none (default), connection (end the session), "
        "process (SIGKILL the agent), both",
    )
    parser.add_argument(
        "--agent-pid",
        type=int,
        metavar="PID",
        help="the agent to kill in kill modes process/both (default: our parent)",
    )
    parser.add_argument(
        "--grace-period",
        type=float,
        default=DEFAULT_GRACE_S,
        metavar="S",
        help="seconds between the shutdown steps (default: %(default)s)",
    )
    parser.add_argument(
        "--max-line",
        type=int,
        default=DEFAULT_MAX_LINE,
        metavar="BYTES",
        help="longest message line in either direction (default: 16 MiB)",
    )
    parser.add_argument(
        "--no-filter-tools-list",
        dest="filter_tools_list",
        action="store_false",
        help="pass tools/list results unfiltered",
    )
    parser.add_argument(
        "--command",
        dest="command_string",
        metavar='"COMMAND ARGS"',
        help="the server command as one string, split like a shell would",
    )
    add_signing_arguments(parser)
    # Identity wiring (issue 6): optional over stdio; verified like on HTTP.
    parser.add_argument(
        "--identity-token-file",
        metavar="F",
        help="a JWT access token for this session (re-read when it changes; default: "
        "$AGENTWALL_IDENTITY_TOKEN), verified against the policy's identity: section",
    )
    parser.add_argument(
        "--oidc-issuer", metavar="URL", help="override the policy's identity.issuer"
    )
    parser.add_argument("server_command", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS",
                        help="the MCP server to run")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from agentwall.audit.keys import load_audit_key
    from agentwall.audit.log import AuditLog
    from agentwall.io.stdio_wrap import StdioWrap, WrapConfig, run_wrap, split_command
    from agentwall.promote.enforce import SignedPolicyLoader

    command = list(args.server_command)
    if command and command[0] == "--":
        command = command[1:]
    if args.command_string is not None:
        if command:
            raise ConfigError("give the server either after -- or with --command, not both")
        command = split_command(args.command_string)
    if not command:
        raise ConfigError("no MCP server command: agentwall wrap [options] -- COMMAND [ARGS...]")
    if args.max_line < 1024:
        raise ConfigError("--max-line must be at least 1024 bytes")
    if args.grace_period < 0:
        raise ConfigError("--grace-period must not be negative")
    if args.agent_pid is not None and args.agent_pid <= 1:
        raise ConfigError("--agent-pid must be a process id above 1")
    if args.log_max_bytes is not None and args.log_max_bytes < 1:
        raise ConfigError("--log-max-bytes must be positive")

    loader = SignedPolicyLoader(args)
    policy = loader(args.policy)  # PolicyError / SignatureError: exit 2 before anything runs
    for warning in getattr(policy, "warnings", ()):
        print(f"agentwall wrap: warning: {warning}", file=sys.stderr)
    if (problem := loader.check_for(policy.hash).problem) is not None:
        print(f"agentwall wrap: warning: {problem}", file=sys.stderr)
    key = load_audit_key(args.audit_key_file)
    for warning in key.warnings:
        print(f"agentwall wrap: {warning}", file=sys.stderr)
    # In-process and synchronous: wrap serves one agent, whose call cannot
    # proceed before its entry is durable anyway (see docs/wrap.md).
    audit_log = AuditLog.open(args.log_path, key, max_bytes=args.log_max_bytes)

    def reload_policy() -> tuple[Any, dict[str, Any]]:
        fresh = loader(args.policy)
        return fresh, loader.audit_detail(fresh.hash)

    config = WrapConfig(
        command=tuple(command),
        kill_mode=args.kill_mode,
        agent_pid=args.agent_pid,
        dry_run=args.dry_run
        or os.environ.get("AGENTWALL_DRY_RUN", "").strip().lower() in ("1", "true", "yes"),
        log_params=args.log_params,
        max_line=args.max_line,
        grace_s=args.grace_period,
        filter_tools_list=args.filter_tools_list,
    )
    detail = {"policy_path": args.policy, **loader.audit_detail(policy.hash)}
    identity = _wrap_identity(args, policy)
    try:
        return run_wrap(
            lambda: StdioWrap(
                config,
                policy=policy,
                audit=audit_log,
                reload_policy=reload_policy,
                start_detail=detail,
                identity=identity,
            )
        )
    finally:
        audit_log.close()


def _wrap_identity(args: argparse.Namespace, policy: Any) -> Any:
    """The session's identity source (issue 6), or None when no token is given."""
    from agentwall.identity import coerce_identity_config
    from agentwall.io.oidc import OidcAuthenticator, TokenFile, WrapIdentity

    source = TokenFile(args.identity_token_file)
    if not source.configured():
        return None
    if policy.identity is None:
        raise ConfigError(
            "an identity token was given but the policy has no identity: section to verify it"
        )
    config = coerce_identity_config(policy.identity, issuer_override=args.oidc_issuer)
    authenticator = OidcAuthenticator(config, class_claims=sorted(policy.identity_claims_used))
    return WrapIdentity(authenticator, source)
