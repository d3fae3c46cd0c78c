"""Token-bucket rate limits in shared memory, correct across processes.

Three kinds of bucket, each taken for every ``tools/call`` request that the
policy gives its rate for:

* the client bucket (``client.max_calls_per_second`` / ``burst``), keyed by
  the client (principal) across all of its sessions: the verified identity,
  else the peer address; a call that names no client is its session's own
  client (``wrap``: one agent per session).  A fresh ``initialize`` gets a new
  session and a full session bucket, never a new client bucket;
* the session bucket (``session.max_calls_per_second`` / ``burst``), keyed by
  the session id;
* the tool bucket (a tool's ``rate_limit``), keyed by the tool name across all
  sessions by default (``tool_scope="global"``: it protects the tool's
  backend), or per session and tool with ``tool_scope="session"``.

The client bucket is taken first, then the session bucket, then the tool
bucket; a call refused by a later bucket has still spent its earlier tokens
(attempts count, which is what stops a runaway loop).
A refusal carries a retry-after hint: the time until the refusing bucket holds
one whole token again.  The capacity (burst) defaults to one second's worth of
calls, and at least one call.

Rate-limit state is never cached and never part of a decision-cache key: the
pool asks the limiter on every call, before the cache.

Buckets are created on first use.  When a key's probe window is full, a bucket
idle for longer than the longest refill time of any limit this limiter has
applied (and at least a minute) is re-keyed: such a bucket is full, so handing it
to a new key changes nothing.  If none is idle, the call is refused (fail
closed) and counted as ``full``; size the table for the number of sessions
active within a refill period.

Time is passed in (``now_ns``, a monotonic clock shared by every process, e.g.
``time.monotonic_ns()``).
"""

from __future__ import annotations

import math
from hashlib import blake2b
from typing import Literal, Protocol

import msgspec

from agentwall.cache import layout, tokens
from agentwall.cache.backend import BackendName, BucketsLike, get_backend
from agentwall.cache.layout import Region
from agentwall.types import Call, Decision

DEFAULT_BUCKETS = 16384
MIN_RECLAIM_NS = 60_000_000_000
_PERSON = b"aw-ratelimit-v1"

Scope = Literal["client", "session", "tool"]


class RateSpec(msgspec.Struct, frozen=True):
    """``calls_per_second`` refill; ``burst`` capacity (None: one second's worth)."""

    calls_per_second: float
    burst: float | None = None

    @property
    def capacity(self) -> float:
        if self.burst is not None:
            return max(1.0, self.burst)
        return max(1.0, self.calls_per_second)


class _RateLike(Protocol):
    @property
    def calls_per_second(self) -> float: ...
    @property
    def burst(self) -> int | float | None: ...


def as_spec(value: float | _RateLike | RateSpec | None) -> RateSpec | None:
    """Accepts what a policy gives: a rate in calls/s, or an object with
    ``calls_per_second`` and ``burst``; None or a non-positive rate means no limit."""
    if value is None:
        return None
    if isinstance(value, RateSpec):
        spec = value
    elif isinstance(value, int | float):
        spec = RateSpec(float(value))
    else:
        burst = value.burst
        spec = RateSpec(float(value.calls_per_second), None if burst is None else float(burst))
    if not (spec.calls_per_second > 0 and math.isfinite(spec.calls_per_second)):
        return None
    return spec


class RateVerdict(msgspec.Struct, frozen=True):
    allowed: bool
    # Set when refused: which bucket, its rate, and the hint in seconds.
    scope: Scope | None = None
    limit: float | None = None
    retry_after_s: float = 0.0


ALLOWED = RateVerdict(True)


class _Compiled(msgspec.Struct, frozen=True):
    rate_q: int
    capacity: int
    refill_ns: int
    one: int  # the cost of one call in token units (capped at capacity)


class SharedBuckets:
    __slots__ = ("backend", "buckets", "region")

    def __init__(self, region: Region, buckets: BucketsLike, backend: str) -> None:
        self.region = region
        self.buckets = buckets
        self.backend = backend

    @classmethod
    def create(
        cls,
        *,
        buckets: int = DEFAULT_BUCKETS,
        window: int = layout.DEFAULT_WINDOW,
        backend: BackendName = "auto",
        name: str = "agentwall-ratelimit",
    ) -> SharedBuckets:
        chosen = get_backend(backend)
        region = Region.create(name, layout.bucket_bytes(buckets))
        try:
            layout.format_buckets(region.map, chosen.impl, buckets, window)
            table = chosen.buckets(region.map, region.fd)
        except BaseException:
            region.close()
            raise
        return cls(region, table, chosen.name)

    def close(self) -> None:
        del self.buckets
        self.region.close()


def bucket_key(kind: str, *parts: str) -> int:
    """A non-zero 64-bit key; every part is length-prefixed, so no two
    different (kind, parts) share an input."""
    chunks = [kind.encode()]
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        chunks.append(len(data).to_bytes(8, "little"))
        chunks.append(data)
    digest = blake2b(b"\0".join(chunks), digest_size=8, person=_PERSON).digest()
    return int.from_bytes(digest, "little") or 1


class RateLimiter:
    """Per-client, per-session and per-tool token buckets shared by every
    forked process."""

    def __init__(
        self, shared: SharedBuckets, *, tool_scope: Literal["global", "session"] = "global"
    ) -> None:
        self._shared = shared
        self._buckets = shared.buckets
        self.tool_scope = tool_scope
        self._compiled: dict[RateSpec, _Compiled] = {}
        # Recently used bucket keys (hashing a session id costs more than a take).
        self._keys: dict[tuple[str, str, str], int] = {}
        self._reclaim_ticks = MIN_RECLAIM_NS >> layout.TICK_SHIFT
        self.allowed = 0
        self.refused = 0

    @classmethod
    def create(
        cls,
        *,
        buckets: int = DEFAULT_BUCKETS,
        window: int = layout.DEFAULT_WINDOW,
        backend: BackendName = "auto",
        tool_scope: Literal["global", "session"] = "global",
    ) -> RateLimiter:
        return cls(
            SharedBuckets.create(buckets=buckets, window=window, backend=backend),
            tool_scope=tool_scope,
        )

    @property
    def backend(self) -> str:
        return self._shared.backend

    def _compile(self, spec: RateSpec) -> _Compiled:
        compiled = self._compiled.get(spec)
        if compiled is None:
            capacity = tokens.tokens_to_units(spec.capacity)
            refill_ns = math.ceil(capacity / layout.TOKEN_ONE / spec.calls_per_second * 1e9)
            compiled = _Compiled(
                tokens.rate_to_q(spec.calls_per_second),
                capacity,
                refill_ns,
                min(layout.TOKEN_ONE, capacity),
            )
            self._compiled[spec] = compiled
            # A bucket may only be re-keyed once it is certainly full again.
            reclaim_ns = max(MIN_RECLAIM_NS, 2 * refill_ns)
            self._reclaim_ticks = max(self._reclaim_ticks, (reclaim_ns >> layout.TICK_SHIFT) + 1)
        return compiled

    def take(self, key: int, spec: RateSpec, now_ns: int, cost: float = 1.0) -> int:
        """One take from bucket ``key``: 0 when allowed, else retry-after in ns."""
        compiled = self._compile(spec)
        if cost == 1.0:
            units = compiled.one
        else:
            units = min(tokens.tokens_to_units(cost), compiled.capacity)
        return self._buckets.take(
            key, compiled.rate_q, compiled.capacity, units, now_ns, self._reclaim_ticks
        )

    def check(
        self,
        session: str,
        tool: str | None,
        session_rate: RateSpec | None,
        tool_rate: RateSpec | None,
        now_ns: int,
        *,
        client: str | None = None,
        client_rate: RateSpec | None = None,
    ) -> RateVerdict:
        """Takes from the client bucket, then the session bucket, then the tool
        bucket (each when it has a rate).  ``client`` None: the session is its
        own client (a distinct bucket from the session one, same key)."""
        if client_rate is not None:
            who = session if client is None else client
            wait = self.take(self._key("client", who, ""), client_rate, now_ns)
            if wait:
                self.refused += 1
                return RateVerdict(False, "client", client_rate.calls_per_second, wait / 1e9)
        if session_rate is not None:
            wait = self.take(self._key("session", session, ""), session_rate, now_ns)
            if wait:
                self.refused += 1
                return RateVerdict(False, "session", session_rate.calls_per_second, wait / 1e9)
        if tool is not None and tool_rate is not None:
            if self.tool_scope == "global":
                key = self._key("tool", "", tool)
            else:
                key = self._key("session-tool", session, tool)
            wait = self.take(key, tool_rate, now_ns)
            if wait:
                self.refused += 1
                return RateVerdict(False, "tool", tool_rate.calls_per_second, wait / 1e9)
        self.allowed += 1
        return ALLOWED

    def _key(self, kind: str, session: str, tool: str) -> int:
        # ``session`` is the client's key for kind "client".
        memo = (kind, session, tool)
        key = self._keys.get(memo)
        if key is None:
            if kind in ("session", "client"):
                key = bucket_key(kind, session)
            elif kind == "tool":
                key = bucket_key(kind, tool)
            else:
                key = bucket_key(kind, session, tool)
            if len(self._keys) >= 8192:
                self._keys.clear()
            self._keys[memo] = key
        return key

    def stats(self) -> dict[str, int]:
        shared = self._buckets.stats()
        return {"allowed": self.allowed, "refused": self.refused, **shared}

    def close(self) -> None:
        del self._buckets
        self._shared.close()


# -- the one rate-limit rule every evaluator applies ---------------------------------------


class RateRefusal(msgspec.Struct, frozen=True):
    """A call a token bucket refused: its rule, reason and retry hint."""

    rule_id: str
    reason: str
    retry_after_ms: int

    def decision(self, call_id: str, policy_hash: str) -> Decision:
        return Decision(
            call_id=call_id,
            verdict="deny",
            rule_id=self.rule_id,
            reason=self.reason,
            pointer=None,
            policy_hash=policy_hash,
            category="rate_limit",
            cacheable=False,
            retry_after_ms=self.retry_after_ms,
        )


def _spec(rate: float | None, burst: float | None) -> RateSpec | None:
    if rate is None:
        return None
    return as_spec(RateSpec(float(rate), None if burst is None else float(burst)))


class PolicyRates:
    """The rates a policy sets (``session:``, ``client:``, each tool's
    ``rate_limit``) and the check the pool, ``start --workers 0`` and
    ``wrap`` all make before judging a client's ``tools/call`` request.

    Takes any object with the ``Policy`` attributes it reads (duck-typed, so
    this pure module does not import the policy package).  Per-tool specs are
    looked up on first use and remembered, bounded."""

    __slots__ = ("_tool_getter", "_tools", "client", "policy", "session")

    _MAX_TOOLS = 4096

    def __init__(self, policy: object) -> None:
        self.policy = policy
        self.session = _spec(
            getattr(policy, "session_rate", None), getattr(policy, "session_burst", None)
        )
        self.client = _spec(
            getattr(policy, "client_rate", None), getattr(policy, "client_burst", None)
        )
        self._tool_getter = getattr(policy, "tool_rate_limit", None) or getattr(
            policy, "tool_rate", None
        )
        self._tools: dict[str, RateSpec | None] = {}

    def tool(self, name: str) -> RateSpec | None:
        try:
            return self._tools[name]
        except KeyError:
            pass
        spec = as_spec(self._tool_getter(name)) if self._tool_getter is not None else None
        if len(self._tools) < self._MAX_TOOLS:
            self._tools[name] = spec
        return spec

    def any_limit(self) -> bool:
        """Whether the policy sets any rate (a limiter is needed at all)."""
        if self.session is not None or self.client is not None:
            return True
        return any(self.tool(t.name) is not None for t in getattr(self.policy, "tools", ()))

    def refusal(self, limiter: RateLimiter, call: Call, now_ns: int) -> RateRefusal | None:
        """Take the call's tokens; the refusal when a bucket is empty.  Only a
        client's ``tools/call`` request is limited."""
        if call.method != "tools/call" or call.kind != "request" or call.origin != "client":
            return None
        tool_rate = self.tool(call.target)
        if self.session is None and tool_rate is None and self.client is None:
            return None
        verdict = limiter.check(
            call.session,
            call.target,
            self.session,
            tool_rate,
            now_ns,
            client=call.client,
            client_rate=self.client,
        )
        if verdict.allowed:
            return None
        retry_ms = max(1, int(verdict.retry_after_s * 1000 + 0.999))
        scope = verdict.scope or "session"
        return RateRefusal(
            f"rate_limit.{scope}",
            f"{scope} rate limit of {verdict.limit:g} calls/s exceeded; retry after {retry_ms} ms",
            retry_ms,
        )
