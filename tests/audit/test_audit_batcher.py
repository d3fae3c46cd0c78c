from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentwall.audit.batcher import GroupCommitBatcher

requests = st.lists(st.tuples(st.integers(1, 50), st.integers(1, 5000)), max_size=60)


@given(
    reqs=requests,
    max_entries=st.integers(1, 100),
    max_bytes=st.integers(1, 20000),
    takes=st.lists(st.integers(0, 60), max_size=20),
)
def test_batches_are_fifo_lossless_and_bounded(
    reqs: list[tuple[int, int]], max_entries: int, max_bytes: int, takes: list[int]
) -> None:
    batcher: GroupCommitBatcher[int] = GroupCommitBatcher(
        max_entries=max_entries, max_bytes=max_bytes
    )
    out: list[int] = []
    offered = 0
    # Interleave offers and takes.
    for step in [*takes, len(reqs)]:
        while offered < min(step, len(reqs)) or (step == len(reqs) and offered < len(reqs)):
            n, b = reqs[offered]
            batcher.offer(offered, entries=n, nbytes=b, now_ns=offered)
            offered += 1
        batch = batcher.take()
        if batch:
            entries = sum(reqs[i][0] for i in batch)
            nbytes = sum(reqs[i][1] for i in batch)
            assert len(batch) == 1 or (entries <= max_entries and nbytes <= max_bytes)
        out += batch
    while len(batcher):
        batch = batcher.take()
        assert batch
        out += batch
    assert out == list(range(len(reqs)))
    assert batcher.pending_entries == 0
    assert batcher.pending_bytes == 0
    assert batcher.take() == []


@given(reqs=requests)
def test_a_batch_takes_as_much_as_fits(reqs: list[tuple[int, int]]) -> None:
    batcher: GroupCommitBatcher[int] = GroupCommitBatcher(max_entries=64, max_bytes=10_000)
    for i, (n, b) in enumerate(reqs):
        batcher.offer(i, entries=n, nbytes=b, now_ns=0)
    while len(batcher):
        batch = batcher.take()
        if len(batcher):
            # The next waiting request did not fit: the batch is maximal.
            nxt = reqs[batch[-1] + 1]
            entries = sum(reqs[i][0] for i in batch) + nxt[0]
            nbytes = sum(reqs[i][1] for i in batch) + nxt[1]
            assert entries > 64 or nbytes > 10_000


def test_due_immediately_by_default_and_after_delay_otherwise() -> None:
    eager: GroupCommitBatcher[str] = GroupCommitBatcher()
    assert not eager.due(0)
    assert eager.deadline_ns() is None
    eager.offer("a", entries=1, nbytes=10, now_ns=100)
    assert eager.due(100)

    patient: GroupCommitBatcher[str] = GroupCommitBatcher(max_entries=3, max_delay_ns=1000)
    patient.offer("a", entries=1, nbytes=10, now_ns=100)
    assert not patient.due(500)
    assert patient.deadline_ns() == 1100
    assert patient.due(1100)
    patient.offer("b", entries=2, nbytes=10, now_ns=600)
    assert patient.due(601)  # full: no reason to wait


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        GroupCommitBatcher(max_entries=0)
