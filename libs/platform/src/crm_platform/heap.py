"""The collector's view of a process once it has started.

A service allocates most of its long-lived objects while starting: modules, classes, compiled statements,
protobuf descriptors, caches. Left in the collector's generations they are traversed by every full
collection; the first full collections after start paused request handling for 60–150 ms (measured in the
customer list benchmark, issue #4). :func:`freeze_startup_heap` collects once and moves the survivors into the
permanent generation, which no collection traverses; objects created later are collected as usual.

Batch work (:func:`batch_collection`, :func:`use_batch_collection`) gets a larger young generation
(:data:`BATCH_YOUNG_THRESHOLD`). With CPython's default of 700 container objects the collector ran every few
rows of a batch import: 2,400 young, 220 middle and 20 full collections in the customer service during a
100,000-row import, and 1,850/170/15 in its import helper, walking the batches in flight again and again,
though nearly everything a row allocates is freed by reference counting first. Collected after 50,000
allocations instead, the same import runs about one collection; the service's CPU per imported row fell from
85 to 75 µs, and the import went from 6,700 to 7,300–7,400 rows/s (alternating runs, ``bench/import_bench.py``)
at the same peak RSS.
Request handling keeps the default: with the larger generation for good, a collection, when it came, paused
the gateway's ``GET /api/v1/customers/{id}`` long enough to take its p99 from 24–25 ms to 35–43 ms
(``bench/gateway.py``, alternating runs). So the service uses it only while an import job runs, and the
import's helper process, which serves no requests, always.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)


_frozen = False

BATCH_YOUNG_THRESHOLD = 50_000  # allocations (net of deallocations) of container objects between young collections
_batch_jobs = 0
_default_young = 0


def freeze_startup_heap() -> int:
    """Collect, then freeze every object alive now, once per process (later calls, e.g. a test process
    starting many services, do nothing); return how many objects are frozen."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
        log.info("start-up heap frozen", extra={"objects": gc.get_freeze_count()})
    return gc.get_freeze_count()


def use_batch_collection() -> None:
    """From now on, this process's young generation is :data:`BATCH_YOUNG_THRESHOLD` (a process doing batch
    work only, such as the import's helper)."""
    gc.set_threshold(BATCH_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


@contextlib.contextmanager
def batch_collection() -> Iterator[None]:
    """The young generation is :data:`BATCH_YOUNG_THRESHOLD` while any such block of the process runs (a batch
    job), then back to what it was. For the event loop's thread: blocks may overlap but not run in parallel."""
    global _batch_jobs, _default_young
    if _batch_jobs == 0:
        _default_young = gc.get_threshold()[0]
        use_batch_collection()
    _batch_jobs += 1
    try:
        yield
    finally:
        _batch_jobs -= 1
        if _batch_jobs == 0:
            gc.set_threshold(_default_young, *gc.get_threshold()[1:])
