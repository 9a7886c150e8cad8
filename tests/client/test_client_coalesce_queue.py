"""The coalescing queue's invariants, under any order of arrivals, give-ups, sends and returns."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from signoff.client import Coalescing
from signoff.client.coalesce import ABANDONED, QUEUED, SENT, Entry, Queue

POLICY = Coalescing(window=0.001, max_items=6, max_bytes=400, max_in_flight=2)

# ("add", items, payload bytes) | ("abandon", which) | ("take", seconds later) | ("return",)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 7), st.integers(1, 120)),
        st.tuples(st.just("abandon"), st.integers(0, 50)),
        st.tuples(st.just("take"), st.sampled_from([0.0, 0.0005, 0.002])),
        st.tuples(st.just("return")),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_batches_keep_arrival_order_stay_within_limits_and_never_carry_a_given_up_check(
    steps: list[tuple[object, ...]],
) -> None:
    queue = Queue(POLICY)
    now = 0.0
    added: list[Entry] = []
    sent: list[Entry] = []
    flying = 0
    for step in steps:
        match step:
            case ("add", int(items), int(size)):
                entry = Entry("CheckBatch", [b"x" * size] * items, deadline=100.0)
                if not queue.fits(entry):
                    continue  # sent on its own by the client, never queued
                queue.add(entry, now)
                added.append(entry)
            case ("abandon", int(which)) if added:
                entry = added[which % len(added)]
                if entry.state in (QUEUED, SENT):
                    queue.abandon(entry)
            case ("take", float(later)):
                now += later
                flight = queue.take(now)
                if flight is None:
                    continue
                flying += 1
                assert flight.entries
                assert all(entry.state == SENT for entry in flight.entries)
                assert sum(entry.count for entry in flight.entries) <= POLICY.max_items
                assert sum(entry.size for entry in flight.entries) <= POLICY.max_bytes
                sent += flight.entries
            case ("return",) if flying:
                flying -= 1
                queue.in_flight -= 1
            case _:
                pass
        assert queue.in_flight == flying
    # Sent in the order they arrived, each at most once, never after being given up.
    assert sent == [entry for entry in added if entry in sent]
    assert len({id(entry) for entry in sent}) == len(sent)
    left = queue.drain()
    assert all(entry.state == QUEUED for entry in left)
    for entry in added:
        if entry in sent:
            assert entry not in left
        elif entry not in left:
            assert entry.state == ABANDONED  # given up while queued: dropped, never sent


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=1, max_size=20))
def test_a_free_call_slot_sends_at_once_a_full_batch_never_waits_and_others_wait(
    counts: list[int],
) -> None:
    queue = Queue(Coalescing(window=1.0, max_items=4, max_in_flight=1))
    waiting = 0
    for i, count in enumerate(counts):
        queue.add(Entry("CheckBatch", [b"x"] * count, deadline=100.0), 0.0)
        waiting += count
        flight = queue.take(0.0)
        if i == 0:
            assert flight is not None  # nothing was in flight
            waiting = 0
            continue
        if waiting < 4:
            assert flight is None  # the one slot is busy and the window a second away
            continue
        assert flight is not None
        waiting -= sum(entry.count for entry in flight.entries)
        while waiting >= 4:
            more = queue.take(0.0)
            assert more is not None
            waiting -= sum(entry.count for entry in more.entries)
    # Once the window has passed, whatever waits goes.
    if waiting:
        assert queue.take(1.0) is not None
