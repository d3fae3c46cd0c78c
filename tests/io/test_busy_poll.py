"""The front-end's busy poll, on a real uvloop loop with a stepped clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from agentwall.io.busy_poll import BusyPoll


class SteppedClock:
    """Advances by ``step`` each time the poll yields the CPU: deterministic
    where a wall clock would make the test depend on the machine's speed."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step
        self.yields = 0

    def __call__(self) -> float:
        return self.now

    def yield_cpu(self) -> None:
        self.yields += 1
        self.now += self.step


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    uvloop.run(scenario())


def test_polls_while_a_call_is_in_flight_and_stops_when_none_is() -> None:
    clock = SteppedClock(step=0.0)  # the budget never runs out
    calls_in_flight = [1]
    poll = BusyPoll(1.0, lambda: calls_in_flight[0] > 0, clock=clock, yield_cpu=clock.yield_cpu)

    async def scenario() -> None:
        poll.begin()
        assert poll.running
        for _ in range(10):
            await asyncio.sleep(0)
        assert poll.running
        assert poll.turns >= 5  # one turn per loop iteration, not one in all
        calls_in_flight[0] = 0
        for _ in range(3):
            await asyncio.sleep(0)
        assert not poll.running

    run(scenario)
    assert clock.yields == poll.turns  # every turn gave the CPU away


def test_stops_when_the_budget_is_spent_even_with_a_call_in_flight() -> None:
    clock = SteppedClock(step=0.001)  # each turn "takes" 1 ms
    poll = BusyPoll(0.005, lambda: True, clock=clock, yield_cpu=clock.yield_cpu)

    async def scenario() -> None:
        poll.begin()
        for _ in range(50):
            await asyncio.sleep(0)
        assert not poll.running

    run(scenario)
    assert poll.turns == 5


def test_one_episode_at_a_time_and_a_new_one_after() -> None:
    clock = SteppedClock(step=0.001)
    poll = BusyPoll(0.003, lambda: True, clock=clock, yield_cpu=clock.yield_cpu)

    async def scenario() -> None:
        poll.begin()
        poll.begin()  # a second request while polling: same episode
        for _ in range(20):
            await asyncio.sleep(0)
        assert poll.turns == 3
        poll.begin()  # the next request starts a fresh budget
        for _ in range(20):
            await asyncio.sleep(0)
        assert poll.turns == 6

    run(scenario)


def test_zero_budget_is_off() -> None:
    clock = SteppedClock(step=0.0)
    poll = BusyPoll(0.0, lambda: True, clock=clock, yield_cpu=clock.yield_cpu)

    async def scenario() -> None:
        poll.begin()
        assert not poll.running
        await asyncio.sleep(0)

    run(scenario)
    assert poll.turns == 0
    assert clock.yields == 0
