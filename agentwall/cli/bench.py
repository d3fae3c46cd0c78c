"""``agentwall bench``: measure the proxy against the same upstream, direct and proxied."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agentwall.errors import ConfigError

HELP = "measure calls/s and added latency, direct vs through agentwall, side by side"


def _concurrency(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,16,64, got {text!r}") from None
    if not values or any(v < 1 or v > 1024 for v in values):
        raise argparse.ArgumentTypeError("each concurrency must be between 1 and 1024")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mode",
        choices=("http", "stdio"),
        default="http",
        help="http: `agentwall start`; stdio: `agentwall wrap` (default http)",
    )
    parser.add_argument(
        "--concurrency",
        type=_concurrency,
        default=None,
        metavar="1,16,64",
        help="clients, one request in flight each (default 1,16,64; stdio: 1)",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--calls", type=int, help="calls per measured run")
    size.add_argument("--duration", type=float, help="seconds per measured run (default 5)")
    parser.add_argument("--policy", help="policy file (default: the bundled bench policy)")
    parser.add_argument(
        "--upstream",
        default="builtin",
        help="'builtin' (the fast built-in MCP server) or an http:// MCP URL",
    )
    parser.add_argument(
        "--audit",
        choices=("durable", "none"),
        default="durable",
        help="'none' only if the proxy really has such a mode (it is refused "
        "otherwise, never faked)",
    )
    parser.add_argument(
        "--workload",
        default="default",
        help="default (mixed), echo_tiny, echo_64k, tools_list or deny_tool",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternate direct/proxied this many times (samples pooled)",
    )
    parser.add_argument("--warmup", type=int, default=50, help="unrecorded calls per client")
    parser.add_argument("--processes", type=int, help="load generator processes (default: auto)")
    parser.add_argument("--only", choices=("both", "direct", "proxied"), default="both")
    parser.add_argument(
        "--proxy-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `agentwall start` (repeatable)",
    )
    parser.add_argument("--json", metavar="OUT", help="also write the full results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep logs and audit files")


def run(args: argparse.Namespace) -> int:
    from agentwall.benchtool.loadgen import LoadError
    from agentwall.benchtool.procs import ProcessError
    from agentwall.benchtool.report import render, to_json
    from agentwall.benchtool.runner import BenchError, BenchOptions, run_bench
    from agentwall.benchtool.workload import WORKLOADS

    if args.workload not in WORKLOADS:
        raise ConfigError(f"unknown workload {args.workload!r}; choose from {', '.join(WORKLOADS)}")
    if args.calls is not None and args.calls < 1:
        raise ConfigError("--calls must be at least 1")
    if args.duration is not None and not 0 < args.duration <= 3600:
        raise ConfigError("--duration must be in (0, 3600] seconds")
    if args.rounds < 1 or args.warmup < 0:
        raise ConfigError("--rounds must be >= 1 and --warmup >= 0")
    if args.upstream != "builtin" and not args.upstream.startswith("http://"):
        raise ConfigError("--upstream is 'builtin' or an http:// URL")
    if args.mode == "stdio" and args.upstream != "builtin":
        raise ConfigError("--mode stdio uses the built-in stdio upstream")
    if args.policy is not None and not Path(args.policy).is_file():
        raise ConfigError(f"--policy {args.policy}: no such file")
    concurrency = args.concurrency or ((1,) if args.mode == "stdio" else (1, 16, 64))
    opts = BenchOptions(
        mode=args.mode,
        concurrency=concurrency,
        calls=args.calls,
        duration_s=None if args.calls is not None else (args.duration or 5.0),
        policy=args.policy,
        upstream=args.upstream,
        audit=args.audit,
        workload=args.workload,
        rounds=args.rounds,
        warmup_calls=args.warmup,
        processes=args.processes,
        proxy_args=tuple(args.proxy_arg),
        only=args.only,
        keep_dir=args.keep,
    )
    from agentwall.benchtool.stopping import unwind_on_stop_signals

    try:
        with unwind_on_stop_signals():
            report = run_bench(opts)
    except (BenchError, LoadError, ProcessError) as exc:
        print(f"agentwall bench: {exc}", file=sys.stderr)
        return 1
    print(render(report))
    if args.json:
        Path(args.json).write_bytes(to_json(report))
    return 0
