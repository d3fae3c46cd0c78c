"""The shared deadline timer: it fires by the earliest deadline asked of it."""

from __future__ import annotations

import asyncio

from agentwall.io.deadline import DeadlineTimer


def test_fires_by_the_earliest_deadline_asked_and_only_once() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        timer = DeadlineTimer(loop, lambda: fired.append(loop.time()))
        start = loop.time()
        timer.fire_by(start + 5.0)
        timer.fire_by(start + 0.1)  # earlier: re-armed
        timer.fire_by(start + 3.0)  # later than the armed one: nothing to do
        await asyncio.sleep(0.4)
        assert len(fired) == 1
        assert fired[0] - start < 1.0  # by the 0.1 s deadline, not the 3 s or 5 s one
        timer.fire_by(loop.time() + 0.05)  # armed again after firing
        await asyncio.sleep(0.3)
        return fired

    assert len(asyncio.run(main())) == 2


def test_cancel_stops_it() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        timer = DeadlineTimer(loop, lambda: fired.append(loop.time()))
        timer.fire_by(loop.time() + 0.05)
        timer.cancel()
        await asyncio.sleep(0.2)
        return fired

    assert asyncio.run(main()) == []
