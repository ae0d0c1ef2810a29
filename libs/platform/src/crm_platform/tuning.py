"""How a service's process runs: the Linux scheduling policy of its threads, and its asyncio event loop.

**Scheduling policy** (``CRM_CPU_POLICY``, :func:`apply_cpu_policy`).
A request through the gateway to a service wakes several threads of each process: gRPC's completion-queue
poller and its event-engine threads hand every finished operation to the asyncio loop's thread. Under the
default policy (``SCHED_OTHER``) each wake-up preempts whichever thread is running on that core, so a loaded
service switches threads several times per request: measured at 6.8 involuntary switches of the customer
service's loop thread per ``GetCustomer`` at 2,300 requests/s, with a quarter of its CPU time in the kernel's
task switching (``perf``; ``bench/gateway.py``). Under ``SCHED_BATCH`` a woken thread does not preempt the
running one; it runs when that one blocks (in ``epoll_wait``, between requests) or its slice ends. The same
load then costs 1.5 switches per request and the gateway path serves 6–7% more requests on the same two cores.

The price is latency under contention only: a woken thread may wait for the running thread's slice (a few
milliseconds) where it would have preempted it. On an idle core it runs at once, as before. ``normal``
(``CRM_CPU_POLICY``) keeps the kernel's default for a deployment that prefers that.

The policy is set on every thread the process has, and threads started later inherit it, as do child
processes (the import helper, uvicorn's workers). It needs no privilege: ``SCHED_BATCH`` is not a real-time
policy, and a process may always choose it for its own threads.

**Event loop** (``CRM_EVENT_LOOP``, :func:`run`). uvloop by default, as uvicorn already runs the gateway: its
transports are compiled, where asyncio's default loop runs every socket read and write of the database driver
and the broker through Python code (``selector_events.py``, 8% of the customer service's CPU per
``GetCustomer``). With it the customer service spends ~8% less CPU per ``GetCustomer`` (measured
alternately, 4 runs each). ``asyncio`` keeps the standard loop.

Together (``bench/``, same machine): the gateway's ``GET /api/v1/customers/{id}`` went from 2,169–2,280 to
2,575 requests/s, and a 100,000-row import from 4,500 to 5,742 rows/s (the customer service's CPU per row from
121 to 96 µs).

One caveat of uvloop, seen with 0.23: once its loop has closed, a write to a full pipe may return short, and
``print`` on an unbuffered stdout (``PYTHONUNBUFFERED``, as the images set) does not retry. Print inside the
coroutine :func:`run` runs, or write with ``os.write`` until every byte is out (``bench.common.emit_json``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from crm_platform.logging import configure_logging
from crm_platform.telemetry import configure_tracing

if TYPE_CHECKING:
    from crm_platform.config import CommonSettings

log = logging.getLogger(__name__)

POLICIES = ("batch", "normal")
EVENT_LOOPS = ("uvloop", "asyncio")
DEFAULT_EVENT_LOOP = "uvloop"

T = TypeVar("T")


def _threads() -> list[int]:
    try:
        return [int(entry.name) for entry in Path("/proc/self/task").iterdir()]
    except OSError:  # no /proc: only the calling thread
        return [0]


def apply_cpu_policy(policy: str) -> str:
    """Put every thread of this process under ``policy`` (one of :data:`POLICIES`); return the policy in force
    (``normal`` where the platform has no ``SCHED_BATCH`` or refuses it)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown CPU policy {policy!r}: expected one of {', '.join(POLICIES)}")
    batch = getattr(os, "SCHED_BATCH", None)
    if batch is None:
        return "normal"
    wanted = batch if policy == "batch" else os.SCHED_OTHER
    try:
        for tid in _threads():
            try:
                os.sched_setscheduler(tid, wanted, os.sched_param(0))
            except ProcessLookupError:  # the thread ended meanwhile
                continue
    except OSError as exc:
        log.warning("CPU policy %s not applied: %s", policy, exc)
        return "normal"
    return policy


def run(main: Coroutine[Any, Any, T], event_loop: str) -> T:
    """``asyncio.run(main)`` on a new loop of kind ``event_loop`` (one of :data:`EVENT_LOOPS`)."""
    if event_loop not in EVENT_LOOPS:
        raise ValueError(f"unknown event loop {event_loop!r}: expected one of {', '.join(EVENT_LOOPS)}")
    if event_loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def prepare_process(part: str, settings: CommonSettings) -> None:
    """What every part's process does first, before any of its threads starts: JSON logs, tracing, and the
    threads' scheduling policy (which threads started later inherit)."""
    configure_logging(part, settings.log_level)
    configure_tracing(part, settings.otlp_endpoint)
    apply_cpu_policy(settings.cpu_policy)
