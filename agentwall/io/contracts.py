"""The two seams every transport shell plugs into.

Both the HTTP front-end and the stdio wrapper depend only on these protocols,
so the same fail-closed rules hold whichever evaluator and audit sink sit
behind them (in-process for `wrap`, pre-forked workers and the writer process
for `start`).
"""

from __future__ import annotations

from typing import Final, Protocol

from agentwall.types import AuditEvent, Call, Decision

# The category of the deny an evaluator returns when it decided the call but
# could not make the decision's audit entry durable: the shell refuses the
# call as it would for its own failed write (503, AUDIT_UNAVAILABLE).
AUDIT_FAILED_CATEGORY: Final = "audit_unavailable"


class Evaluator(Protocol):
    async def evaluate(self, call: Call) -> Decision:
        """Never raises: a crash, timeout or internal error is a deny Decision
        whose reason says so.

        A Decision with ``durable`` set already has its audit entry written
        and fsynced by the evaluator (the pool's workers write their own); the
        shell must not write a second one.  Any other Decision is the shell's
        to record before it acts on it."""
        ...


class AuditSink(Protocol):
    async def record(self, event: AuditEvent) -> int:
        """Returns the entry's seq once it is durable (written and fsynced).
        Raises ``agentwall.errors.AuditError`` when it cannot be made durable;
        the caller then denies."""
        ...
