"""``client:``: one rate per client across its sessions.  Parsed like
``session:``, rejected with file:line:column, and absent from the content hash
when it is not given (existing hashes and signatures stay valid)."""

from __future__ import annotations

import textwrap

import pytest

from agentwall.errors import PolicyError
from agentwall.policy import ClientConfig, loads_policy
from agentwall.policy.compiled import canonical_form

BASE = """\
version: "2"
default_action: deny
session: {max_calls_per_second: 10}
tools:
  - {name: echo, action: allow, risk: low}
"""


def _error(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        loads_policy(textwrap.dedent(text), source_path="p.yaml")
    return info.value


def test_client_rate_and_burst_load() -> None:
    p = loads_policy(BASE + "client: {max_calls_per_second: 50, burst: 100}\n")
    assert p.model.client == ClientConfig(max_calls_per_second=50.0, burst=100)
    assert (p.client_rate, p.client_burst) == (50.0, 100)
    # burst is optional, and a fractional rate is kept as it is
    p = loads_policy(BASE + "client: {max_calls_per_second: 0.5}\n")
    assert (p.client_rate, p.client_burst) == (0.5, None)


def test_absent_client_means_no_limit_and_the_same_hash() -> None:
    p = loads_policy(BASE)
    assert p.model.client is None
    assert (p.client_rate, p.client_burst) == (None, None)
    assert "client" not in canonical_form(p.model)["policy"]
    # The hash of a policy without the key is the one it had before the key
    # existed (pinned: computed by the code before ClientConfig was added).
    assert p.hash == "e2fea06aa469f2ea5e3f5e26df4b0ad0d116db88722d98949a87a1baf7e49143"


def test_client_is_in_the_hash_when_given() -> None:
    plain = loads_policy(BASE)
    limited = loads_policy(BASE + "client: {max_calls_per_second: 50}\n")
    bursty = loads_policy(BASE + "client: {max_calls_per_second: 50, burst: 100}\n")
    assert len({plain.hash, limited.hash, bursty.hash}) == 3
    assert canonical_form(bursty.model)["policy"]["client"] == {
        "max_calls_per_second": 50.0,
        "burst": 100,
    }
    # Same meaning, same hash: key order and 50 vs 50.0 do not matter.
    again = loads_policy(BASE + "client: {burst: 100, max_calls_per_second: 50.0}\n")
    assert again.hash == bursty.hash


@pytest.mark.parametrize(
    ("tail", "line", "column", "needle", "key", "suggestion"),
    [
        (
            "client: {max_calls_per_sec: 5}\n",
            6,
            10,
            "unknown key 'max_calls_per_sec' in client",
            "max_calls_per_sec",
            "max_calls_per_second",
        ),
        (
            "client: {burst: 5}\n",
            6,
            9,
            "client is missing the required key 'max_calls_per_second'",
            "max_calls_per_second",
            None,
        ),
        ("client: {max_calls_per_second: 0}\n", 6, 32, "greater than 0", None, None),
        ("client: {max_calls_per_second: -1}\n", 6, 32, "greater than 0", None, None),
        ("client: {max_calls_per_second: fast}\n", 6, 32, "must be a number", None, None),
        (
            "client: {max_calls_per_second: 5, burst: 0}\n",
            6,
            42,
            "client.burst must be between 1 and 1000000",
            None,
            None,
        ),
        (
            "client: {max_calls_per_second: 5, burst: 2.5}\n",
            6,
            42,
            "client.burst must be an integer",
            None,
            None,
        ),
        ("client: 50\n", 6, 9, "client must be a mapping", None, None),
        ("clinet: {max_calls_per_second: 5}\n", 6, 1, "unknown key", "clinet", "client"),
    ],
)
def test_client_rejections_have_positions(
    tail: str, line: int, column: int, needle: str, key: str | None, suggestion: str | None
) -> None:
    err = _error(BASE + tail)
    assert (err.line, err.column) == (line, column), err.diagnostics()
    assert needle in err.diagnostics()
    if key is not None:
        assert err.key == key
    assert err.suggestion == suggestion
    assert err.diagnostics().startswith(f"p.yaml:{line}:{column}: ")
