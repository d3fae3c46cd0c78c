"""``PolicyRates``: the one rate-limit rule the pool, ``start --workers 0``
and ``wrap`` apply, on a real loaded policy and a real shared-memory limiter."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwall.cache.ratelimit import PolicyRates, RateLimiter, RateSpec
from agentwall.core.jsonrpc import parse
from agentwall.core.mcp import make_call
from agentwall.policy import load_policy
from agentwall.types import Call

SECOND = 1_000_000_000
POLICY = """\
version: "2"
default_action: deny
session: {max_calls_per_second: 0.01, burst: 3}
client: {max_calls_per_second: 0.01, burst: 5}
tools:
  - name: echo
    action: allow
  - name: slow
    action: allow
    rate_limit: {calls_per_second: 0.01, burst: 1}
"""


def _call(session: str, method: str = "tools/call", name: str = "echo", n: int = 1) -> Call:
    body = b'{"jsonrpc":"2.0","id":%d,"method":"%s","params":{"name":"%s","arguments":{}}}' % (
        n,
        method.encode(),
        name.encode(),
    )
    message = parse(body).message
    return make_call(
        message,  # type: ignore[arg-type]
        session=session,
        transport="http",
        origin="client",
        call_id=f"c{n}",
        identity=None,
        now_ns=0,
        client="peer:127.0.0.1",
    )


@pytest.fixture
def rates(tmp_path: Path) -> PolicyRates:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return PolicyRates(load_policy(path))


def test_refusals_name_their_bucket_and_make_a_rate_limit_deny(
    rates: PolicyRates, backend: str
) -> None:
    limiter = RateLimiter.create(buckets=256, backend=backend)  # type: ignore[arg-type]
    try:
        assert rates.session == RateSpec(0.01, 3.0)
        assert rates.client == RateSpec(0.01, 5.0)
        assert rates.tool("slow") == RateSpec(0.01, 1.0)
        assert rates.tool("echo") is None
        assert rates.any_limit()
        now = 100 * SECOND
        outcomes = [rates.refusal(limiter, _call("s1", n=i), now) for i in range(4)]
        assert outcomes[:3] == [None, None, None]
        refused = outcomes[3]
        assert refused is not None
        assert refused.rule_id == "rate_limit.session"
        assert "session rate limit of 0.01 calls/s exceeded" in refused.reason
        # A fresh session: the client bucket (5) still counts the first four.
        outcomes = [rates.refusal(limiter, _call("s2", n=10 + i), now) for i in range(2)]
        assert outcomes[0] is None
        assert outcomes[1] is not None
        assert outcomes[1].rule_id == "rate_limit.client"
        decision = outcomes[1].decision("c11", "hash")
        assert (decision.verdict, decision.category, decision.cacheable) == (
            "deny",
            "rate_limit",
            False,
        )
        assert decision.retry_after_ms == outcomes[1].retry_after_ms > 0
        # Only a client's tools/call request is limited.
        assert rates.refusal(limiter, _call("s1", method="tools/list", n=20), now) is None
    finally:
        limiter.close()


def test_a_policy_without_rates_needs_no_limiter(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        'version: "2"\ndefault_action: deny\ntools:\n  - name: echo\n    action: allow\n'
    )
    rates = PolicyRates(load_policy(path))
    assert (rates.session, rates.client, rates.tool("echo")) == (None, None, None)
    assert not rates.any_limit()
