"""Keep the front-end's event loop polling, not sleeping, while a call is in flight.

An audited call makes the front-end wait three times: for the evaluator
worker, for the audit writer's durable ack, and for the upstream.  Each wait
ends with the loop asleep in epoll and a wake-up when the answer arrives.  On
this project's VM (Firecracker, 2 vCPUs) a wake-up costs tens of µs of latency
and of CPU, and at one client the front-end spent more than twice the CPU per
call it spends at 64 clients (where it never sleeps).  Polling through those
waits took 150-250 µs off the median at one client (fifth session, alternated
runs; docs/bench.md).

Each turn re-arms a ready callback, so the loop polls epoll with a zero
timeout instead of sleeping, and yields the CPU (``sched_yield``) so that a
worker, the writer or the upstream on the same core still runs first.  It is
bounded: an episode starts when a request arrives and ends when no call is in
flight or ``budget_s`` after it started.  An idle proxy, or one waiting on a
slow tool, sleeps as before.  The price is CPU while calls are in flight at
low load (up to one core with one client calling back to back); at high load
the loop is busy anyway.  ``agentwall start --busy-poll-us 0`` turns it off.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable


class BusyPoll:
    __slots__ = ("_active", "_budget_s", "_clock", "_started", "_yield_cpu", "running", "turns")

    def __init__(
        self,
        budget_s: float,
        active: Callable[[], bool],
        *,
        clock: Callable[[], float] = time.perf_counter,
        yield_cpu: Callable[[], None] = os.sched_yield,
    ) -> None:
        self._budget_s = budget_s
        self._active = active
        self._clock = clock
        self._yield_cpu = yield_cpu
        self._started = 0.0
        self.running = False
        self.turns = 0  # loop turns spent polling (for tests)

    def begin(self) -> None:
        """A call arrived: poll until none is in flight, within the budget."""
        if self.running or self._budget_s <= 0:
            return
        self.running = True
        self._started = self._clock()
        asyncio.get_running_loop().call_soon(self._turn)

    def _turn(self) -> None:
        if self._active() and self._clock() - self._started < self._budget_s:
            self.turns += 1
            self._yield_cpu()
            asyncio.get_running_loop().call_soon(self._turn)
        else:
            self.running = False
