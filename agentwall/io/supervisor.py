"""``agentwall start``: compose the sidecar and run it.

Start order (the design card):

1. load the policy (a policy that does not load: exit 2 with its file:line:col);
2. the audit writer process (sole owner of the log file);
3. the evaluator workers, pre-forked with the policy compiled, BEFORE any
   event loop or thread exists (compiled validators cannot be pickled, and
   forking a threaded process is unsafe);
4. the uvloop event loop: audit client, upstream pool, front-end.

Signals: SIGTERM/SIGINT drain the calls in flight and write a stop entry;
SIGHUP reloads the policy atomically (a policy that does not load keeps the
old one, logs why and writes an audit entry).  A writer that dies is
restarted; while it is down every call is refused (-32002), never forwarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from agentwall import __version__
from agentwall.audit.keys import load_verify_keys
from agentwall.audit.report import render_json, report_for_log
from agentwall.cache.ratelimit import PolicyRates, RateLimiter
from agentwall.cache.shm import DecisionCache
from agentwall.core import mcp_http as mh
from agentwall.errors import AuditError, ConfigError, PolicyError, SignatureError
from agentwall.identity import IdentityConfig, coerce_identity_config
from agentwall.io.audit_writer import AuditWriterClient, AuditWriterProcess
from agentwall.io.audit_writer import render_metrics as render_audit_metrics
from agentwall.io.contracts import Evaluator
from agentwall.io.http_front import FrontConfig, Proxy, serve
from agentwall.io.oidc import (
    CredentialedUpstreamPool,
    HttpIdentityGate,
    OidcAuthenticator,
    OidcSettings,
    UpstreamCredentials,
    describe_identity,
    identity_metrics,
)
from agentwall.io.pool import EvaluatorPool
from agentwall.io.upstream import UpstreamPool
from agentwall.io.worker import PolicyEngine, WorkerAudit
from agentwall.policy import Policy, filter_tools_list, load_policy
from agentwall.policy import evaluate as policy_evaluate
from agentwall.policy.secrets import params_for_log
from agentwall.types import AuditEvent, Call, Decision, KillMode

log = logging.getLogger("agentwall.start")

# How long an audit entry may take to become durable before its call is
# refused (the front-end's writes and the evaluator workers' alike).
AUDIT_DEADLINE_S = 2.0


class StartConfig(msgspec.Struct, frozen=True):
    policy_path: str | None = None
    listen: str = "127.0.0.1:8080"
    mcp_url: str = "http://127.0.0.1:3000/mcp"
    log_path: str = "agentwall-audit.log"
    kill_mode: KillMode = "none"
    dry_run: bool = False
    workers: int = 2
    agent_pid: int | None = None
    agent_pid_file: str | None = None
    report_path: str | None = None
    audit_key_file: str | None = None
    log_params: bool = False
    log_max_bytes: int | None = None
    filter_tools_list: bool = True
    cache: bool = True
    oidc_issuer: str | None = None
    upstream_headers: tuple[str, ...] = ()
    upstream_token_file: str | None = None
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    upstream_timeout: float = 60.0
    eval_timeout: float = 2.0
    max_body_bytes: int = 4 * 1024 * 1024
    max_inflight: int = 2048
    max_connections: int = 4096
    request_timeout: float = 30.0
    idle_timeout: float = 75.0
    drain_timeout: float = 10.0
    busy_poll_us: int = 1000
    # The evaluator workers write the entries of the calls they decide
    # (--audit-from workers); False: the front-end writes every entry.
    entries_from_workers: bool = False


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise ConfigError(f"--listen must be HOST:PORT, got {listen!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"--listen port {port} is out of range")
    return host.strip("[]"), port


class InProcessEvaluator:
    """``--workers 0``: evaluate in the front-end process (small setups,
    benchmarks).  Same contract and same rate-limit rule as the pool: never
    raises; a refusal by a token bucket is a deny with category
    ``rate_limit`` and ``retry_after_ms``; an internal error is a deny."""

    def __init__(self, policy: Policy, limiter: RateLimiter | None) -> None:
        self.limiter = limiter
        self.evaluated = 0
        self.reload(policy)

    def reload(self, policy: Policy) -> None:
        self.policy = policy
        self._rates = PolicyRates(policy)

    async def evaluate(self, call: Call) -> Decision:
        policy = self.policy
        self.evaluated += 1
        if self.limiter is not None:
            refused = self._rates.refusal(self.limiter, call, time.monotonic_ns())
            if refused is not None:
                return refused.decision(call.call_id, policy.hash)
        try:
            return policy_evaluate(policy, call, time.time_ns())
        except Exception as exc:
            log.exception("policy evaluation failed for %s", call.call_id)
            return Decision(
                call_id=call.call_id,
                verdict="deny",
                rule_id="internal.evaluator_error",
                reason=f"the evaluator failed: {type(exc).__name__}",
                pointer=None,
                policy_hash=policy.hash,
                category="evaluator_error",
                cacheable=False,
            )

    def prometheus(self) -> str:
        return (
            "# TYPE agentwall_evaluator_calls_total counter\n"
            f"agentwall_evaluator_calls_total {self.evaluated}\n"
        )


PolicyLoader = Callable[[str | None], Policy]


class Sidecar:
    """The running parts, so shutdown can undo them in reverse order."""

    def __init__(self, config: StartConfig, loader: PolicyLoader | None = None) -> None:
        self.config = config
        # load_policy, or promote's SignedPolicyLoader (--require-signed):
        # the one load function for start-up, SIGHUP and every worker.
        self.load: PolicyLoader = loader or load_policy
        self.policy: Policy | None = None
        self.writer: AuditWriterProcess | None = None
        self.audit: AuditWriterClient | None = None
        self.pool: EvaluatorPool | None = None
        self.inproc: InProcessEvaluator | None = None
        self.cache: DecisionCache | None = None
        self.limiter: RateLimiter | None = None
        self.proxy: Proxy | None = None
        self.upstream: UpstreamPool | None = None
        self.stop_event: asyncio.Event | None = None
        self.reloading = False
        self.started_ns = time.time_ns()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.oidc: OidcAuthenticator | None = None
        self.identity_config: IdentityConfig | None = None
        self.credentials: UpstreamCredentials | None = None

    # -- phase 1: before any event loop or thread -------------------------------
    def prepare(self) -> None:
        cfg = self.config
        parse_listen(cfg.listen)
        if cfg.workers < 0:
            raise ConfigError("--workers must be 0 or more")
        if cfg.kill_mode not in ("none", "connection", "process", "both"):
            raise ConfigError(
                f"--kill-mode must be none, connection, process or both: {cfg.kill_mode!r}"
            )
        UpstreamPool(cfg.mcp_url)  # validates --mcp-url
        if cfg.upstream_headers or cfg.upstream_token_file:
            self.credentials = UpstreamCredentials(cfg.upstream_headers, cfg.upstream_token_file)
        # A policy that does not load (or whose signature is refused) stops
        # us here, exit 2, before any process starts.
        self.policy = self.load(cfg.policy_path)
        identity = getattr(self.policy, "identity", None)
        if identity is not None or cfg.oidc_issuer is not None:
            if identity is None:
                raise ConfigError(
                    "--oidc-issuer needs an identity: section in the policy (audience)"
                )
            self.identity_config = coerce_identity_config(identity, issuer_override=cfg.oidc_issuer)
        for warning in getattr(self.policy, "warnings", ()):
            print(f"agentwall start: warning: {warning}", file=sys.stderr)
        check_for = getattr(self.load, "check_for", None)
        if check_for is not None and (problem := check_for(self.policy.hash).problem):
            print(f"agentwall start: warning: {problem}", file=sys.stderr)
        self.writer = AuditWriterProcess(
            cfg.log_path, key_file=cfg.audit_key_file, max_bytes=cfg.log_max_bytes
        )
        self.writer.start()  # returns once the log is open (and recovered) and it listens
        self.limiter = RateLimiter.create()
        if cfg.workers == 0:
            self.inproc = InProcessEvaluator(self.policy, self.limiter)
            return
        self.cache = DecisionCache.create() if cfg.cache else None
        self.pool = EvaluatorPool.start(
            cfg.policy_path,
            workers=cfg.workers,
            cache=self.cache,
            rate_limiter=self.limiter,
            deadline_s=cfg.eval_timeout,
            engine=PolicyEngine(self.load, policy_evaluate),
            audit=WorkerAudit(
                str(self.writer.socket_path),
                dry_run=cfg.dry_run,
                log_params=cfg.log_params,
                deadline_s=AUDIT_DEADLINE_S,
            )
            if cfg.entries_from_workers
            else None,
        )
        self.policy = self.pool.policy

    @property
    def evaluator(self) -> Evaluator:
        if self.pool is not None:
            return self.pool
        assert self.inproc is not None
        return self.inproc

    # -- phase 2: the event loop -------------------------------------------------
    async def run(self) -> int:
        cfg = self.config
        loop = asyncio.get_running_loop()
        assert self.policy is not None
        assert self.writer is not None
        self.stop_event = asyncio.Event()
        self.audit = AuditWriterClient(self.writer.socket_path, deadline_s=AUDIT_DEADLINE_S)
        await self.audit.connect()
        if self.pool is not None:
            await self.pool.attach()
        host, port = parse_listen(cfg.listen)
        gate: HttpIdentityGate | None = None
        if self.identity_config is not None:
            # The identity class in the decision-cache key must cover every
            # claim a rule looks at.
            self.oidc = OidcAuthenticator(
                self.identity_config,
                OidcSettings(),
                class_claims=sorted(getattr(self.policy, "identity_claims_used", ())),
            )
            if not await self.oidc.start():
                log.error(
                    "the identity provider's keys could not be fetched yet; requests get 503 "
                    "until a retry succeeds"
                )
            gate = HttpIdentityGate(self.oidc, listen=cfg.listen, audit=self.audit)
        connect_timeout = min(5.0, cfg.upstream_timeout)
        if self.credentials is not None:
            self.upstream = CredentialedUpstreamPool(
                cfg.mcp_url, credentials=self.credentials, connect_timeout=connect_timeout
            )
        else:
            self.upstream = UpstreamPool(cfg.mcp_url, connect_timeout=connect_timeout)
        mask = params_for_log if cfg.log_params else None
        front = FrontConfig(
            kill_mode=cfg.kill_mode,
            dry_run=cfg.dry_run,
            filter_tools_list=cfg.filter_tools_list,
            log_params=cfg.log_params,
            origin_policy=mh.OriginPolicy(
                allowed_origins=frozenset(o.lower() for o in cfg.allowed_origins),
                allowed_hosts=frozenset(h.lower() for h in cfg.allowed_hosts),
                check_host=mh.is_loopback_host(host),
            ),
            max_body_bytes=cfg.max_body_bytes,
            max_inflight=cfg.max_inflight,
            max_connections=cfg.max_connections,
            request_timeout=cfg.request_timeout,
            idle_timeout=cfg.idle_timeout,
            upstream_timeout=cfg.upstream_timeout,
            agent_pid=cfg.agent_pid,
            agent_pid_file=cfg.agent_pid_file,
            busy_poll_us=cfg.busy_poll_us,
        )
        self.proxy = Proxy(
            front,
            evaluator=self.evaluator,
            audit=self.audit,
            upstream=self.upstream,
            policy=self.policy,
            tools_filter=filter_tools_list,
            authenticator=gate,
            mask_params=mask,
            readiness=self.readiness,
            processes=self.processes,
            metrics_extras=[self._component_metrics],
        )
        await self._record_start()
        try:
            server = await serve(self.proxy, host, port)
        except OSError as exc:
            await self._record_stop(f"cannot listen on {cfg.listen}: {exc}")
            await self._close_async()
            raise ConfigError(f"cannot listen on {cfg.listen}: {exc.strerror or exc}") from exc
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        supervise = loop.create_task(self.writer.supervise(on_restart=self._writer_restarted))
        print(
            f"agentwall {__version__}: listening on http://{cfg.listen}/mcp -> {cfg.mcp_url} "
            f"({cfg.workers} workers, kill-mode {cfg.kill_mode}"
            f"{', DRY RUN' if cfg.dry_run else ''})",
            file=sys.stderr,
            flush=True,
        )
        await self.stop_event.wait()
        log.warning("stopping: draining calls in flight")
        server.close()
        await self.proxy.drain(loop.time() + cfg.drain_timeout)
        supervise.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervise
        await self._record_stop("signal")
        await self._close_async()
        return 0

    async def _close_async(self) -> None:
        if self.oidc is not None:
            await self.oidc.aclose()
        if self.upstream is not None:
            await self.upstream.close()
        if self.pool is not None:
            await self.pool.close(drain_s=2.0)
        if self.audit is not None:
            await self.audit.close()

    async def readiness(self) -> dict[str, bool]:
        writer_ok = bool(
            self.writer is not None
            and self.writer.alive
            and self.audit is not None
            and self.audit.ready
        )
        workers_ok = self.pool.ready if self.pool is not None else True
        checks = {"audit_writer": writer_ok, "workers": workers_ok}
        if self.oidc is not None:
            checks["identity_keys"] = self.oidc.ready
        return checks

    def processes(self) -> dict[str, Any]:
        return {
            "front_end": os.getpid(),
            "audit_writer": self.writer.pid if self.writer is not None else None,
            "evaluator_workers": self.pool.worker_pids() if self.pool is not None else [],
            "evaluator_zygote": self.pool.zygote_pid if self.pool is not None else None,
        }

    async def _component_metrics(self) -> str:
        parts: list[str] = []
        if self.pool is not None:
            parts.append(self.pool.prometheus(prefix="agentwall_pool"))
        elif self.inproc is not None:
            parts.append(self.inproc.prometheus())
        if self.audit is not None:
            writer_stats = None
            with contextlib.suppress(AuditError):
                writer_stats = await self.audit.writer_stats(timeout_s=0.5)
            parts.append(render_audit_metrics(self.audit.stats(), writer_stats))
        if self.oidc is not None:  # identity (issue 6)
            gate = self.proxy.authenticator if self.proxy is not None else None
            parts.append(identity_metrics(self.oidc, gate))
        return "".join(parts)

    def _writer_restarted(self, message: str) -> None:
        log.error("%s", message)
        self._spawn(self._record_when_ready(AuditEvent(event="error", reason=message)))

    async def _record_when_ready(self, event: AuditEvent) -> None:
        for _ in range(250):
            if self.audit is not None and self.audit.ready:
                break
            await asyncio.sleep(0.02)
        await self._record(event)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, event: AuditEvent) -> None:
        assert self.audit is not None
        try:
            await self.audit.record(event)
        except AuditError as exc:
            log.error("audit entry %s could not be written: %s", event.event, exc)

    async def _record_start(self) -> None:
        cfg = self.config
        assert self.policy is not None
        await self._record(
            AuditEvent(
                event="proxy_start",
                transport="http",
                policy_hash=self.policy.hash,
                detail={
                    "version": __version__,
                    "listen": cfg.listen,
                    "mcp_url": cfg.mcp_url,
                    "workers": cfg.workers,
                    "kill_mode": cfg.kill_mode,
                    "dry_run": cfg.dry_run,
                    "filter_tools_list": cfg.filter_tools_list,
                    "cache": cfg.cache,
                    "pid": os.getpid(),
                    "identity": describe_identity(self.oidc) if self.oidc is not None else None,
                },
            )
        )
        await self._record(
            AuditEvent(
                event="policy_loaded",
                policy_hash=self.policy.hash,
                detail={
                    "path": cfg.policy_path,
                    "safe_mode_only": cfg.policy_path is None,
                    **self._signature_detail(self.policy.hash),
                },
            )
        )
        if cfg.dry_run:
            await self._record(
                AuditEvent(
                    event="dry_run_active",
                    reason="--dry-run: denials are logged as dry_run_deny and forwarded anyway",
                )
            )

    def _signature_detail(self, policy_hash: str) -> dict[str, Any]:
        detail = getattr(self.load, "audit_detail", None)
        return dict(detail(policy_hash)) if detail is not None else {}

    async def _record_stop(self, why: str) -> None:
        m = self.proxy.metrics if self.proxy else None
        await self._record(
            AuditEvent(
                event="proxy_stop",
                reason=why,
                detail={
                    "uptime_s": round((time.time_ns() - self.started_ns) / 1e9, 3),
                    "decisions": dict(m.decisions) if m else {},
                },
            )
        )

    # -- SIGHUP -----------------------------------------------------------------
    def _on_sighup(self) -> None:
        if self.reloading:
            log.warning("SIGHUP ignored: a reload is already running")
            return
        self.reloading = True
        self._spawn(self.reload())

    async def reload(self) -> bool:
        """Load, then swap everywhere at once, or keep the running policy and
        say why (log and audit entry)."""
        cfg = self.config
        old = self.policy.hash if self.policy else None
        try:
            error: str | None = None
            new: Policy | None = None
            if self.pool is not None:
                result = await self.pool.reload(cfg.policy_path)
                if result.ok:
                    new = self.pool.policy
                else:
                    error = result.error or "the policy did not load"
            else:
                try:
                    new = await asyncio.to_thread(self.load, cfg.policy_path)
                except (PolicyError, SignatureError) as exc:
                    error = exc.diagnostics()
                if new is not None and self.inproc is not None:
                    self.inproc.reload(new)
            if new is None:
                log.error("policy reload failed, keeping the running policy: %s", error)
                await self._record(
                    AuditEvent(
                        event="policy_reload_failed",
                        reason=error,
                        policy_hash=old,
                        detail={"path": cfg.policy_path},
                    )
                )
                return False
            self.policy = new
            if self.proxy is not None:
                self.proxy.policy = new
            await self._reload_identity(new)
            log.warning("policy reloaded: %s", new.hash)
            await self._record(
                AuditEvent(
                    event="policy_loaded",
                    policy_hash=new.hash,
                    detail={
                        "path": cfg.policy_path,
                        "reload": True,
                        "previous_hash": old,
                        **self._signature_detail(new.hash),
                    },
                )
            )
            return True
        finally:
            self.reloading = False

    async def _reload_identity(self, new: Policy) -> None:
        """Identity (issue 6): the reloaded policy's identity: section takes
        effect at once (fresh verified-token cache, the new claim names; keys
        kept unless issuer, jwks_uri or algorithms changed).  Switching
        identity on or off needs a restart: until then the running setting
        stays, so tokens never silently stop being checked."""
        section = getattr(new, "identity", None)
        if self.oidc is None or section is None:
            if (self.oidc is None) != (section is None):
                why = "the identity: section was added or removed; restart to apply it"
                log.error("%s", why)
                await self._record(AuditEvent(event="error", reason=why))
            return
        try:
            config = coerce_identity_config(section, issuer_override=self.config.oidc_issuer)
            await self.oidc.reconfigure(
                config, class_claims=sorted(getattr(new, "identity_claims_used", ()))
            )
        except ConfigError as exc:
            log.error("identity settings of the reloaded policy refused: %s", exc)
            await self._record(AuditEvent(event="error", reason=f"identity: {exc}"))

    # -- shutdown --------------------------------------------------------------------
    def close(self) -> None:
        """Undo phase 1, in reverse; safe after a partial start."""
        if self.pool is not None:
            with contextlib.suppress(Exception):
                self.pool.terminate()
        if self.cache is not None:
            with contextlib.suppress(Exception):
                self.cache.close()
        if self.limiter is not None:
            with contextlib.suppress(Exception):
                self.limiter.close()
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.stop()
            with contextlib.suppress(Exception):
                self.writer.cleanup()

    def write_report(self) -> None:
        """``--report-path``: the audit part's session report (JSON) over the
        log this run wrote, chain verified when the key is at hand; it says
        ``dry_run`` when that was on."""
        cfg = self.config
        if cfg.report_path is None:
            return
        try:
            keys = load_verify_keys([cfg.audit_key_file] if cfg.audit_key_file else None)
        except ConfigError:
            keys = None
        report = report_for_log([cfg.log_path], keys=keys)
        Path(cfg.report_path).write_text(render_json(report), encoding="utf-8")


def run_start(config: StartConfig, *, loader: PolicyLoader | None = None) -> int:
    """The whole life of ``agentwall start``; returns the exit code."""
    logging.basicConfig(
        level=logging.WARNING, format="agentwall: %(levelname)s %(message)s", stream=sys.stderr
    )
    sidecar = Sidecar(config, loader)
    try:
        sidecar.prepare()
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            code = runner.run(sidecar.run())
    finally:
        sidecar.close()
    sidecar.write_report()
    return code
