"""No call is ever wrongly allowed: hypothesis drives a mix of concurrent calls,
kill -9s and stopped workers through a real pool (with the decision cache), and
every answer is checked against the in-process evaluator."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentwall.cache.shm import DecisionCache
from agentwall.core.canonical import canonical_json
from agentwall.io.pool import EvaluatorPool
from agentwall.policy import Policy, evaluate, load_policy
from agentwall.types import PASSING_VERDICTS, Call, Decision

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

POLICY = """
version: "2"
default_action: deny
tools:
  - name: read_file
    action: allow
    parameters:
      - {name: path, type: string, required: true, within: ["/workspace"]}
  - name: search
    action: allow
    parameters:
      - {name: q, type: string, required: true, max_length: 20}
  - name: drop_db
    action: deny
"""

POOL_FAILURES = {"evaluator_crash", "evaluator_timeout", "evaluator_unavailable", "overload"}

paths = st.one_of(
    st.sampled_from(["/workspace/a", "/workspace/../etc/passwd", "/etc/shadow", "~/.ssh/id_rsa"]),
    st.text(max_size=12).map(lambda s: "/workspace/" + s),
)
tool_calls = st.one_of(
    st.tuples(st.just("read_file"), st.fixed_dictionaries({"path": paths})),
    st.tuples(st.just("search"), st.fixed_dictionaries({"q": st.text(max_size=25)})),
    st.tuples(
        st.sampled_from(["drop_db", "nope"]),
        st.dictionaries(st.text(max_size=5), st.integers()),
    ),
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("call"), tool_calls),
        st.tuples(st.just("kill"), st.integers(0, 1)),
        st.tuples(st.just("stop"), st.integers(0, 1)),
    ),
    min_size=1,
    max_size=25,
)


def make_call(n: int, tool: str, arguments: dict[str, Any]) -> Call:
    params = {"name": tool, "arguments": arguments}
    return Call(
        call_id=f"mix-{n}",
        session="mix",
        transport="http",
        origin="client",
        kind="request",
        rpc_id=n,
        method="tools/call",
        target=tool,
        params=params,
        params_json=canonical_json(params),
    )


class Rig:
    def __init__(self, path: Path) -> None:
        self.policy: Policy = load_policy(path)
        self.pool = EvaluatorPool.start(
            path,
            workers=2,
            cache=DecisionCache.create(slots=512),
            deadline_s=0.3,
            hang_s=5.0,
            # Idle threads other tests left behind must not fail this one.
            unsafe_allow_threads=threading.active_count() > 1,
        )
        self.runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        self.runner.run(self.pool.attach())
        self.n = 0

    async def play(self, script: list[tuple[str, Any]]) -> list[tuple[Call, Decision]]:
        loop = asyncio.get_running_loop()
        pending: list[tuple[Call, asyncio.Future[Decision]]] = []
        stopped = killed = False
        for action, arg in script:
            pids = self.pool.worker_pids()
            if action == "call":
                self.n += 1
                c = make_call(self.n, *arg)
                pending.append((c, asyncio.ensure_future(self.pool.evaluate(c))))
            elif pids:
                pid = pids[arg % len(pids)]
                if action == "kill":
                    os.kill(pid, signal.SIGKILL)
                    killed = True
                else:
                    os.kill(pid, signal.SIGSTOP)
                    loop.call_later(0.4, _cont, pid)
                    stopped = True
            await asyncio.sleep(0)
        results = [(c, await f) for c, f in pending]
        if stopped:
            await asyncio.sleep(0.4)  # every stopped worker is continued
        # Let the pool heal before the next example.
        deadline = time.monotonic() + 20
        while killed and (
            len(self.pool.worker_pids()) < 2 or not all(w.ready for w in self.pool.health().workers)
        ):
            assert time.monotonic() < deadline, self.pool.health()
            await asyncio.sleep(0.02)
        return results

    def close(self) -> None:
        try:
            self.runner.run(self.pool.close(drain_s=2.0))
        finally:
            self.pool.terminate()
            self.runner.close()


def _cont(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    path = tmp_path_factory.mktemp("mix") / "policy.yaml"
    path.write_text(POLICY)
    r = Rig(path)
    yield r
    r.close()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(script=steps)
def test_no_call_is_wrongly_allowed(rig: Rig, script: list[tuple[str, Any]]) -> None:
    for c, got in rig.runner.run(rig.play(script)):
        want = evaluate(rig.policy, c, time.time_ns())
        if got.verdict in PASSING_VERDICTS:
            assert want.verdict in PASSING_VERDICTS, (c.params, got, want)
        if got.category in POOL_FAILURES and got.rule_id and got.rule_id.startswith("pool."):
            assert got.verdict == "deny"
            assert not got.cacheable
            continue
        normal = msgspec.structs.replace(got, eval_ns=0, cached=False)
        assert normal == msgspec.structs.replace(want, eval_ns=0), (c.params, got, want)
