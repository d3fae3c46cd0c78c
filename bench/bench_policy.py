"""Benchmarks for the enforcement core: evaluate() on small and large calls.

Run: .venv/bin/python -m pytest bench/bench_policy.py --benchmark-enable -q
(figures are per call; the machine is shared, so compare medians and ratios).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from agentwall.core.canonical import canonical_json
from agentwall.policy import Policy, evaluate, load_policy
from agentwall.policy.secrets import mask_secrets
from agentwall.types import Call

ROOT = Path(__file__).resolve().parents[1]
FILESYSTEM = ROOT / "policies" / "filesystem" / "policy.yaml"


def _call(method: str, params: Any) -> Call:
    return Call(
        call_id="b",
        session="s",
        transport="http",
        origin="client",
        kind="request",
        rpc_id=1,
        method=method,
        target=str(params.get("name", "")),
        params=params,
        params_json=canonical_json(params),
    )


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(FILESYSTEM)


def _check(decision: Any, verdict: str) -> None:
    assert decision.verdict == verdict, decision


def test_small_allowed_call(benchmark: Any, policy: Policy) -> None:
    call = _call(
        "tools/call", {"name": "read_text_file", "arguments": {"path": "/workspace/src/main.py"}}
    )
    _check(benchmark(evaluate, policy, call, 0), "allow")


def test_small_allowed_call_unique_strings(benchmark: Any, policy: Policy) -> None:
    """Every call has a path never seen before (no Safe Mode memo hits)."""
    calls = itertools.cycle(
        [
            _call(
                "tools/call",
                {
                    "name": "read_text_file",
                    "arguments": {
                        "path": f"/workspace/src/module_{i}/file_{i}.py",
                        "head": i % 100 + 1,
                    },
                },
            )
            for i in range(20_000)
        ]
    )
    _check(benchmark(lambda: evaluate(policy, next(calls), 0)), "allow")


def test_small_denied_by_policy(benchmark: Any, policy: Policy) -> None:
    call = _call(
        "tools/call", {"name": "read_text_file", "arguments": {"path": "/workspace/../etc/passwd"}}
    )
    _check(benchmark(evaluate, policy, call, 0), "deny")


def test_small_denied_by_safe_mode(benchmark: Any, policy: Policy) -> None:
    call = _call(
        "tools/call", {"name": "read_text_file", "arguments": {"path": "/workspace/.ssh/id_rsa"}}
    )
    _check(benchmark(evaluate, policy, call, 0), "deny")


def test_small_safe_mode_only(benchmark: Any) -> None:
    call = _call(
        "tools/call", {"name": "search", "arguments": {"query": "quarterly report", "limit": 10}}
    )
    _check(benchmark(evaluate, load_policy(None), call, 0), "allow")


def test_method_ping(benchmark: Any, policy: Policy) -> None:
    call = _call("ping", {})
    _check(benchmark(evaluate, policy, call, 0), "allow")


def test_large_single_string(benchmark: Any, policy: Policy) -> None:
    """write_file with ~400 KB of text content."""
    content = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 7000)[:400_000]
    call = _call(
        "tools/call",
        {"name": "write_file", "arguments": {"path": "/workspace/out/a.md", "content": content}},
    )
    _check(benchmark(evaluate, policy, call, 0), "allow")


# A source file as a coding agent writes it: quotes, brackets, subscripts,
# comments with paths and URLs, and a few non-ASCII characters.  Safe Mode
# reads every variant of such text (docs/policy.md "Cost").
_SOURCE_LINES = (
    "def load(path: str, *args: object, **kw: object) -> dict[str, list[int]]:\n",
    '    """Read ./data/../cache/{name}.json (see https://example.com/docs?x=1)."""\n',
    "    items = [row[0] for row in rows if row[1] > 0]  # café — naïve résumé\n",
    "    return {'a': items[1:], \"b\": items[::2], 'c': f'{kw!r}'}\n",
    "    # TODO: //comment, 100% done, $HOME unset, glob *.py and [abc]?.txt\n",
)


def test_large_source_file(benchmark: Any, policy: Policy) -> None:
    """write_file with 64 KiB of Python-like source holding non-ASCII text."""
    content = "".join(
        line.replace("load", f"load{i}") for i in range(400) for line in _SOURCE_LINES
    )[:65536]
    call = _call(
        "tools/call",
        {"name": "write_file", "arguments": {"path": "/workspace/out/a.py", "content": content}},
    )
    _check(benchmark(evaluate, policy, call, 0), "allow")


def test_large_many_strings(benchmark: Any, policy: Policy) -> None:
    """edit_file with 100 edits (200 distinct strings, ~60 KB)."""
    edits = [
        {
            "oldText": f"def old_function_{i}(x):\n    return x + {i}\n" * 3,
            "newText": f"def new_function_{i}(x):\n    return x * {i}\n" * 3,
        }
        for i in range(100)
    ]
    call = _call(
        "tools/call",
        {"name": "edit_file", "arguments": {"path": "/workspace/a.py", "edits": edits}},
    )
    _check(benchmark(evaluate, policy, call, 0), "allow")


def test_deep_nesting_rejected(benchmark: Any, policy: Policy) -> None:
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    call = Call(
        call_id="b",
        session="s",
        transport="http",
        origin="client",
        kind="request",
        rpc_id=1,
        method="tools/call",
        target="read_text_file",
        params={"name": "read_text_file", "arguments": {"path": deep}},
        params_json=b"",
    )
    _check(benchmark(evaluate, policy, call, 0), "deny")


def test_load_policy(benchmark: Any) -> None:
    benchmark(load_policy, FILESYSTEM)


def test_mask_secrets_medium(benchmark: Any) -> None:
    params = {
        "name": "t",
        "arguments": {f"k{i}": f"value number {i} with some text" for i in range(50)},
    }
    params["arguments"]["token"] = "ghp_" + "a1B2" * 9
    masked, pointers = benchmark(mask_secrets, params)
    assert masked["arguments"]["token"] == "[MASKED:github]"
    assert pointers == ("/arguments/token",)
