"""The collector's view of a process once it has started.

A service allocates most of its long-lived objects while starting: modules, classes, compiled statements,
protobuf descriptors, caches. Left in the collector's generations they are traversed by every full
collection; the first full collections after start paused request handling for 60–150 ms (measured in the
customer list benchmark, issue #4). :func:`freeze_startup_heap` collects once and moves the survivors into the
permanent generation, which no collection traverses; objects created later are collected as usual.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


_frozen = False


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
