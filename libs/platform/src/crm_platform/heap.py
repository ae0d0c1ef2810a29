"""The collector's view of a process once it has started.

A service allocates most of its long-lived objects while starting: modules, classes, compiled statements,
protobuf descriptors, caches. Left in the collector's generations they are traversed by every full
collection; the first full collections after start paused request handling for 60–150 ms (measured in the
customer list benchmark, issue #4). :func:`freeze_startup_heap` collects once and moves the survivors into the
permanent generation, which no collection traverses; objects created later are collected as usual.

It also makes the youngest generation larger (:data:`YOUNG_THRESHOLD`). With CPython's default of 700 container
objects, the collector ran every few rows of a batch import and every few requests: 2,400 young, 220 middle
and 20 full collections in the customer service during a 100,000-row import, and 1,850/170/15 in its import
helper. Nearly everything a request or a row allocates is freed by reference counting long before any
collection; the collections mostly walked the batches in flight, again and again. Collected after 50,000
allocations instead (the older generations keep their ratios), the same import runs one young collection,
the service's CPU per imported row fell from 85 to 75 µs and the import ran 3–6% faster (alternating runs,
``bench/import_bench.py``), at the same peak RSS. Garbage cycles still go, a little later: at most that many
objects wait for the next young collection.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


_frozen = False

YOUNG_THRESHOLD = 50_000  # allocations (net of deallocations) of container objects between young collections


def freeze_startup_heap() -> int:
    """Collect, then freeze every object alive now and set the young generation's threshold, once per process
    (later calls, e.g. a test process starting many services, do nothing); return how many objects are frozen."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
        gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        log.info("start-up heap frozen", extra={"objects": gc.get_freeze_count()})
    return gc.get_freeze_count()
