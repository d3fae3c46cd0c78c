"""An ``Mcp-Session-Id`` belongs to the subject that opened it.

MCP's security guidance: sessions are not authentication, and a server must
bind a session to the user so that a leaked or guessed session id is useless
to anyone else.  The front-end calls ``check(session_id, identity, now)`` on
every request that carries a session id, and ``bind`` when the upstream
assigns one (the ``initialize`` response).  A session id first seen without a
binding (created before a restart, or by an upstream we did not see assign it)
is bound to its first presenter.

Bounded: at most ``max_sessions`` bindings; idle ones expire after
``idle_seconds``, and when full the least recently used binding is dropped (its
session could then be re-bound by its next presenter; documented in
docs/identity.md).
"""

from __future__ import annotations

from collections import OrderedDict

from agentwall.errors import SessionBindingError
from agentwall.types import Identity

_Owner = tuple[str, str]  # (issuer, subject)


class SessionBinder:
    def __init__(self, *, max_sessions: int = 100_000, idle_seconds: float = 24 * 3600.0) -> None:
        self._owners: OrderedDict[str, tuple[_Owner, float]] = OrderedDict()
        self._max = max_sessions
        self._idle = idle_seconds

    def bind(self, session_id: str, identity: Identity, now: float) -> None:
        """Record that ``identity`` opened ``session_id``.  Raises when the id is
        already bound to someone else (an upstream reusing ids, or a race)."""
        self.check(session_id, identity, now)

    def check(self, session_id: str, identity: Identity, now: float) -> None:
        """Raise ``SessionBindingError`` unless ``identity`` owns ``session_id``;
        bind it on first sight."""
        owner = (identity.issuer, identity.subject)
        found = self._owners.get(session_id)
        if found is not None:
            bound, last_used = found
            if now - last_used < self._idle or now < last_used:
                if bound != owner:
                    raise SessionBindingError(
                        "this session belongs to another subject; open your own session"
                    )
                self._owners.move_to_end(session_id)
                self._owners[session_id] = (owner, now)
                return
            del self._owners[session_id]
        self._expire(now)
        self._owners[session_id] = (owner, now)

    def forget(self, session_id: str) -> None:
        """The session ended (DELETE, or the upstream answered 404)."""
        self._owners.pop(session_id, None)

    def owner(self, session_id: str) -> tuple[str, str] | None:
        found = self._owners.get(session_id)
        return None if found is None else found[0]

    def __len__(self) -> int:
        return len(self._owners)

    def _expire(self, now: float) -> None:
        owners = self._owners
        while owners:
            session_id, (_, last_used) = next(iter(owners.items()))
            if now - last_used >= self._idle or len(owners) >= self._max:
                del owners[session_id]
            else:
                break
