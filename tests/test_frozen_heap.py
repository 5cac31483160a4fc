"""A pass keeps the heap it started with out of the collector's walks, and hands it back when
the last pass running ends, collecting what the passes left in reference cycles (a daemon runs
pass after pass, and they may overlap)."""

from __future__ import annotations

import gc
import weakref

from reconciler.engine import _FrozenHeap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_overlapping_passes_unfreeze_once_and_collect_their_cycles() -> None:
    heap = _FrozenHeap()
    was_enabled = gc.isenabled()
    gc.disable()  # no automatic collection: only the end of the passes may free the cycle
    try:
        with heap.held():
            assert gc.get_freeze_count() > 0
            with heap.held():  # a second pass, started while the first runs
                node = Node()
                left = weakref.ref(node)
                del node
            assert gc.get_freeze_count() > 0 and left() is not None  # the first still runs
        assert gc.get_freeze_count() == 0
        assert left() is None
    finally:
        if was_enabled:
            gc.enable()


def test_a_last_pass_unfreezes_without_collecting() -> None:
    """A one-shot command's pass: the process exits next, so its cycles are left as they are."""
    heap = _FrozenHeap()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with heap.held(collect=False):
            node = Node()
            left = weakref.ref(node)
            del node
        assert gc.get_freeze_count() == 0
        assert left() is not None  # not collected: nothing ran the collector
        gc.collect()
        assert left() is None
    finally:
        if was_enabled:
            gc.enable()
