"""The start-up heap freeze: once per process, and objects made afterwards are still collected; batch work's
larger young generation: set while a batch runs, restored after, and cycles still collected on the
collector's own schedule."""

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


def test_batch_work_collects_less_often_and_still_collects() -> None:
    default = gc.get_threshold()
    with heap.batch_collection():
        with heap.batch_collection():  # an overlapping job
            assert gc.get_threshold() == (heap.BATCH_YOUNG_THRESHOLD, *default[1:])
        assert gc.get_threshold()[0] == heap.BATCH_YOUNG_THRESHOLD  # the first job still runs
        gc.collect()
        node = _Node()
        ref = weakref.ref(node)
        del node
        kept = [[] for _ in range(heap.BATCH_YOUNG_THRESHOLD // 2)]  # below the threshold: the cycle waits
        assert ref() is not None
        kept.extend([] for _ in range(heap.BATCH_YOUNG_THRESHOLD))  # past it: the collector runs by itself
        assert ref() is None
    assert gc.get_threshold() == default
