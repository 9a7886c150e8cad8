"""heap.settle: what is alive is set aside from collections; replaced cycles are still freed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from signoff import heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_settle_sets_live_objects_aside_from_the_collector() -> None:
    kept = Node()
    heap.settle()
    assert gc.get_freeze_count() > 0
    assert not any(o is kept for o in gc.get_objects())  # no longer scanned by collections


def test_a_cycle_dropped_after_settle_is_freed_by_the_next_settle() -> None:
    # A replaced bundle's cycles were alive (so frozen) at the last settle; they must not
    # stay in memory forever once the next swap drops them.
    ref = _cycle()
    holder = [ref()]
    heap.settle()
    holder.clear()
    gc.collect()
    assert ref() is not None  # frozen: ordinary collections leave it
    heap.settle()
    assert ref() is None
