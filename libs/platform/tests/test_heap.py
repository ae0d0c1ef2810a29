"""The start-up heap freeze: once per process, and objects made afterwards are still collected — by the
collector's own schedule too, with its larger young generation."""

from __future__ import annotations

import gc
import weakref

from crm_platform import heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_freeze_happens_once_and_later_cycles_are_still_collected() -> None:
    first = heap.freeze_startup_heap()
    assert first > 0 and heap.freeze_startup_heap() == gc.get_freeze_count()  # the second call froze nothing new
    node = _Node()
    ref = weakref.ref(node)
    del node
    gc.collect()
    assert ref() is None


def test_cycles_are_collected_without_an_explicit_collection() -> None:
    heap.freeze_startup_heap()
    assert gc.get_threshold()[0] == heap.YOUNG_THRESHOLD
    gc.collect()
    node = _Node()
    ref = weakref.ref(node)
    del node
    kept = [[] for _ in range(heap.YOUNG_THRESHOLD // 2)]  # allocations alone, below the threshold: it waits
    assert ref() is not None
    kept.extend([] for _ in range(heap.YOUNG_THRESHOLD))  # past it: the collector runs by itself
    assert ref() is None
