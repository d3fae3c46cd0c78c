"""DecisionCache: the key, what is stored, what a hit looks like, and sharing
across processes, for both backends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from agentwall.cache.key import decision_key
from agentwall.cache.shm import DecisionCache
from agentwall.core.canonical import canonical_json
from agentwall.types import Call, Decision, Identity

Forker = Callable[[Callable[[], Any]], Callable[[float], Any]]
HASH = "a" * 64


def make_call(
    tool: str = "read_file",
    args: Any = None,
    *,
    call_id: str = "c1",
    identity: Identity | None = None,
    method: str = "tools/call",
    origin: str = "client",
) -> Call:
    params = {"name": tool, "arguments": args if args is not None else {"path": "/tmp/x"}}
    return Call(
        call_id=call_id,
        session="s1",
        transport="http",
        origin=origin,  # type: ignore[arg-type]
        kind="request",
        rpc_id=1,
        method=method,
        target=tool,
        params=params,
        params_json=canonical_json(params),
        identity=identity,
    )


def make_decision(call_id: str = "c1", **changes: Any) -> Decision:
    base = Decision(
        call_id=call_id,
        verdict="deny",
        rule_id="tools.read_file.path",
        reason="path outside the allowed roots",
        pointer="/arguments/path",
        policy_hash=HASH,
        category="sensitive_path",
        eval_ns=1234,
    )
    return msgspec.structs.replace(base, **changes)


@pytest.fixture
def cache(backend: str) -> DecisionCache:
    return DecisionCache.create(slots=256, slot_size=512, backend=backend)  # type: ignore[arg-type]


def test_key_covers_everything_a_decision_depends_on() -> None:
    base = make_call()
    variants = [
        make_call(tool="write_file"),
        make_call(args={"path": "/tmp/y"}),
        make_call(method="prompts/get"),
        make_call(origin="server"),
        make_call(identity=Identity(subject="u", issuer="i", claims_class="")),
        make_call(identity=Identity(subject="u", issuer="i", claims_class="admins")),
    ]
    keys = {decision_key(HASH, c) for c in variants}
    keys.add(decision_key(HASH, base))
    keys.add(decision_key("b" * 64, base))
    assert len(keys) == len(variants) + 2
    # What a decision does not depend on is not in the key.
    same = msgspec.structs.replace(base, call_id="other", rpc_id=99, session="s2", received_ns=5)
    assert decision_key(HASH, same) == decision_key(HASH, base)


def test_identity_class_not_subject_decides_sharing() -> None:
    a = make_call(identity=Identity(subject="alice", issuer="i", claims_class="eng"))
    b = make_call(identity=Identity(subject="bob", issuer="i", claims_class="eng"))
    assert decision_key(HASH, a) == decision_key(HASH, b)


def test_hit_is_relabelled_and_marked_cached(cache: DecisionCache) -> None:
    call = make_call()
    assert cache.lookup(HASH, call, 1) is None
    assert cache.store(HASH, call, make_decision(), 2)
    again = make_call(call_id="c2")
    hit = cache.lookup(HASH, again, 3)
    assert hit == make_decision(call_id="c2", cached=True)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.stores) == (1, 1, 1)


def test_reload_invalidates_without_flush(cache: DecisionCache) -> None:
    call = make_call()
    cache.store(HASH, call, make_decision(), 1)
    assert cache.lookup("b" * 64, call, 2) is None
    assert cache.lookup(HASH, call, 3) is not None


def test_uncacheable_and_foreign_decisions_are_not_stored(cache: DecisionCache) -> None:
    call = make_call()
    assert not cache.store(HASH, call, make_decision(cacheable=False), 1)
    assert not cache.store(HASH, call, make_decision(policy_hash="c" * 64), 1)
    assert not cache.store(HASH, call, make_decision(cached=True), 1)
    assert cache.lookup(HASH, call, 2) is None
    assert cache.stats().uncacheable == 3


def test_too_large_is_simply_not_cached(backend: str) -> None:
    cache = DecisionCache.create(slots=64, slot_size=128, backend=backend)  # type: ignore[arg-type]
    call = make_call()
    assert not cache.store(HASH, call, make_decision(reason="x" * 500), 1)
    assert cache.lookup(HASH, call, 2) is None
    assert cache.stats().too_large == 1


def test_switched_off(cache: DecisionCache) -> None:
    call = make_call()
    cache.enabled = False
    assert not cache.store(HASH, call, make_decision(), 1)
    cache.enabled = True
    cache.store(HASH, call, make_decision(), 1)
    cache.enabled = False
    assert cache.lookup(HASH, call, 2) is None
    cache.enabled = True
    assert cache.lookup(HASH, call, 3) is not None


def test_memory_is_bounded(cache: DecisionCache) -> None:
    assert cache.memory_bytes <= 64 + 256 * 512 + 4096
    for n in range(5000):
        cache.store(HASH, make_call(args={"n": n}), make_decision(), n)
    assert cache.memory_bytes <= 64 + 256 * 512 + 4096
    assert cache.stats().evictions > 0


def test_a_child_process_sees_what_the_parent_stored(cache: DecisionCache, forker: Forker) -> None:
    call = make_call()
    cache.store(HASH, call, make_decision(), 1)

    def child() -> tuple[Decision | None, bool]:
        seen = cache.lookup(HASH, make_call(call_id="child"), 2)
        stored = cache.store(HASH, make_call(tool="other"), make_decision(verdict="allow"), 3)
        return seen, stored

    seen, stored = forker(child)(30.0)
    assert seen == make_decision(call_id="child", cached=True)
    assert stored
    assert cache.lookup(HASH, make_call(tool="other"), 4) == make_decision(
        verdict="allow", cached=True
    )


def test_backend_is_reported(cache: DecisionCache, backend: str) -> None:
    assert cache.backend == backend
    assert cache.stats().backend == backend
