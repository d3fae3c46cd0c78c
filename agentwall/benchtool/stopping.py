"""SIGTERM and SIGHUP for the commands that start processes of their own.

``agentwall bench``, ``agentwall demo`` and ``scripts/compare-peers`` start an
upstream, a proxy tree and load processes inside ``with`` blocks that stop
them by PID.  Python's default for SIGTERM is to die at once, which skipped
those blocks and left the upstream and the whole ``agentwall start`` tree
running, and the temporary directory behind (``timeout 60 agentwall bench``
did exactly that).  Here the signal unwinds like Ctrl-C instead, so every
block stops what it started.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """Raised where the main thread is when a stop signal arrives.

    A KeyboardInterrupt, so that no ``except Exception`` on the way up can
    swallow it, and so that the CLI answers it as it answers Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def unwind_on_stop_signals() -> Iterator[None]:
    """Within: SIGTERM or SIGHUP raises ``Stopped`` once.  Later ones are
    ignored until the block is left, so that a second signal cannot cut the
    clean-up of the first short (SIGKILL still can, as it must)."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        for s in STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def describe(exc: KeyboardInterrupt) -> str:
    """What ended the command, for its last line on stderr."""
    return f"stopped by {exc}" if isinstance(exc, Stopped) else "interrupted"


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal, as a shell reports a process a signal ended."""
    return 128 + (exc.signum if isinstance(exc, Stopped) else signal.SIGINT)
