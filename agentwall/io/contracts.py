"""The two seams every transport shell plugs into.

Both the HTTP front-end and the stdio wrapper depend only on these protocols,
so the same fail-closed rules hold whichever evaluator and audit sink sit
behind them (in-process for `wrap`, pre-forked workers and the writer process
for `start`).
"""

from __future__ import annotations

from typing import Protocol

from agentwall.types import AuditEvent, Call, Decision


class Evaluator(Protocol):
    async def evaluate(self, call: Call) -> Decision:
        """Never raises: a crash, timeout or internal error is a deny Decision
        whose reason says so."""
        ...


class AuditSink(Protocol):
    async def record(self, event: AuditEvent) -> int:
        """Returns the entry's seq once it is durable (written and fsynced).
        Raises ``agentwall.errors.AuditError`` when it cannot be made durable;
        the caller then denies."""
        ...
