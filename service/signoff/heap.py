"""Keeping the garbage collector's full passes off what a server holds for its whole life."""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect what is garbage now, then set every object still alive (modules, the loaded
    bundle, its compiled programs) aside from future collections.

    A full collection walks every tracked object; with a bundle loaded that took 44 to 270 ms on
    the benchmark machine, holding every call in flight, and was most of the approval path's
    p99 (docs/performance.md). What is alive once a bundle is loaded stays alive until the
    next swap, so scanning it again finds nothing. Called again after a swap: the unfreeze
    lets the replaced bundle's cycles be collected before the new heap is set aside.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
