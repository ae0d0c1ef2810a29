"""Business calendar: µs per ``Calendar.add`` and ``Calendar.elapsed`` on the default calendar (2026–2027).

Every SLA deadline of a ticket is one ``add`` and every SLA clock reading one ``elapsed``, so both sit on
request paths. The instants are random seconds of 2026–2027 given in Asia/Shanghai (as the services hold them),
the durations random seconds up to 40 business hours (a week of work). Each figure is the best of
``RUNS`` timed loops of ``CALLS`` calls, after a warm-up that expands the calendar's years (the expansion
itself is timed apart: it happens once per calendar and process).
"""

from __future__ import annotations

import datetime as dt
import random
import time
from typing import Any
from zoneinfo import ZoneInfo

from bench.common import Row, Section, progress

CALLS = 50_000
RUNS = 3
TARGET_ADD_US = 20.0
MAX_DURATION_S = 40 * 3600
SEED = 2026


def _instants(rng: random.Random, count: int) -> list[dt.datetime]:
    zone = ZoneInfo("Asia/Shanghai")
    start = dt.datetime(2026, 1, 1, tzinfo=zone)
    span = int((dt.datetime(2028, 1, 1, tzinfo=zone) - start).total_seconds())
    return [(start + dt.timedelta(seconds=rng.randrange(span))).astimezone(zone) for _ in range(count)]


def _best_us_per_call(loop: Any) -> tuple[float, list[float]]:
    runs = []
    for _ in range(RUNS):
        started = time.perf_counter()
        loop()
        runs.append((time.perf_counter() - started) / CALLS * 1e6)
    return min(runs), runs


def measure() -> dict[str, Any]:
    """Time ``add`` and ``elapsed``; return µs per call (best and every run) and the one-off expansion."""
    from crm_platform.calendar import DEFAULT_CALENDAR_DICT, Calendar

    rng = random.Random(SEED)
    instants = _instants(rng, CALLS)
    durations = [dt.timedelta(seconds=rng.randrange(MAX_DURATION_S + 1)) for _ in range(CALLS)]
    others = _instants(rng, CALLS)
    calendar = Calendar.from_dict(DEFAULT_CALENDAR_DICT)  # a fresh instance: the expansion below is its own

    started = time.perf_counter()
    calendar.add(instants[0], durations[0])
    calendar.add(max(instants), dt.timedelta(seconds=MAX_DURATION_S))
    expansion_ms = (time.perf_counter() - started) * 1000
    add = calendar.add
    elapsed = calendar.elapsed
    pairs = list(zip(instants, durations, strict=True))
    spans = list(zip(instants, others, strict=True))
    for t, d in pairs[:5000]:  # warm-up
        add(t, d)

    def add_loop() -> None:
        for t, d in pairs:
            add(t, d)

    def elapsed_loop() -> None:
        for a, b in spans:
            elapsed(a, b)

    add_us, add_runs = _best_us_per_call(add_loop)
    elapsed_us, elapsed_runs = _best_us_per_call(elapsed_loop)
    progress(f"  calendar add {add_us:.2f} µs/call, elapsed {elapsed_us:.2f} µs/call")
    return {
        "add_us": add_us,
        "add_runs_us": add_runs,
        "elapsed_us": elapsed_us,
        "elapsed_runs_us": elapsed_runs,
        "expansion_ms": expansion_ms,
        "calls": CALLS,
        "runs": RUNS,
    }


def section(figures: dict[str, Any]) -> Section:
    """The two rows (``add`` against its target) and how they were measured."""
    add_us, elapsed_us = figures["add_us"], figures["elapsed_us"]
    rows = [
        Row(
            "Business calendar add (SLA deadline)",
            "µs per call, default calendar 2026–2027",
            add_us,
            "µs",
            target=f"≤ {TARGET_ADD_US:.0f} µs per add",
            met=add_us <= TARGET_ADD_US,
        ),
        Row("Business calendar elapsed (SLA clock)", "µs per call, default calendar 2026–2027", elapsed_us, "µs"),
    ]
    runs = ", ".join(f"{us:.2f}" for us in figures["add_runs_us"])
    detail = [
        f"Business calendar (`crm_platform.calendar`): best of {figures['runs']} runs of {figures['calls']:,} calls "
        f"on random instants of 2026–2027 (Asia/Shanghai) with random durations up to {MAX_DURATION_S // 3600} "
        f"business hours: `add` {add_us:.2f} µs per call (runs {runs}), `elapsed` between two random instants "
        f"{elapsed_us:.2f} µs per call. Each is a bisect or two into the expanded intervals and their prefix sum; "
        f"the first two calls, which expand the years they touch, took {figures['expansion_ms']:.1f} ms."
    ]
    return Section("Business calendar", rows, detail)
