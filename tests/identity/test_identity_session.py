from __future__ import annotations

import pytest

from agentwall.errors import SessionBindingError
from agentwall.identity import SessionBinder
from agentwall.types import Identity

ALICE = Identity(subject="alice", issuer="https://a")
BOB = Identity(subject="bob", issuer="https://a")
ALICE_ELSEWHERE = Identity(subject="alice", issuer="https://other")


def test_owner_passes_and_others_are_refused() -> None:
    binder = SessionBinder()
    binder.bind("s1", ALICE, 0.0)
    binder.check("s1", ALICE, 1.0)
    with pytest.raises(SessionBindingError) as err:
        binder.check("s1", BOB, 2.0)
    assert err.value.http_status == 403
    # Same subject name from another issuer is another principal.
    with pytest.raises(SessionBindingError):
        binder.check("s1", ALICE_ELSEWHERE, 3.0)
    assert binder.owner("s1") == ("https://a", "alice")


def test_first_presenter_binds_unknown_session() -> None:
    binder = SessionBinder()
    binder.check("s2", BOB, 0.0)
    with pytest.raises(SessionBindingError):
        binder.check("s2", ALICE, 0.5)


def test_forget_and_idle_expiry() -> None:
    binder = SessionBinder(idle_seconds=10.0)
    binder.bind("s1", ALICE, 0.0)
    binder.forget("s1")
    binder.check("s1", BOB, 1.0)  # a new session under the same id
    binder.check("s1", BOB, 9.0)
    binder.check("s1", ALICE, 20.0)  # idle past 10 s since last use: rebound
    assert binder.owner("s1") == ("https://a", "alice")


def test_bounded() -> None:
    binder = SessionBinder(max_sessions=3)
    for i in range(10):
        binder.check(f"s{i}", ALICE, float(i))
    assert len(binder) == 3
    assert binder.owner("s9") == ("https://a", "alice")
    assert binder.owner("s0") is None
