"""Scheduled work (``crm_platform.schedule``) on PostgreSQL: a burst of items all due at once, then a steady stream.

Every run has a scratch database of its own with ``scheduled_items``, the outbox and an effects table. The
handler is what a reminder does: one ``INSERT`` of its effect through the session it is given and one
``Outbox.add`` (an ``InboxMessageCreated`` event; no relay runs, the rows stay in the outbox). The runners are
``ScheduleRunner`` with its defaults (batches of 500, two in flight while there is a backlog), each in a process
of its own (``python -m bench.schedule_bench runner``) on uvloop under the ``batch`` CPU policy, as a service
process runs; started and idle before the items appear.

* **Burst**: ``BURST_ITEMS`` items, COPY-loaded in one transaction, all due at the same instant ``D`` a few
  seconds ahead (the reminders of 09:00 in a branch network: the harshest case of "due within the same
  minute"). Measured: from ``D`` until the last item's done-mark (its ``done_at``), the items/s that makes, each
  item's lateness (``done_at − due_at``), and the runner processes' CPU per item. With one runner process, then
  with two on the same database (replicas sharing the work with ``SKIP LOCKED``).
* **Steady**: a writer process schedules ``STEADY_RATE`` items per second due at once (``Scheduler.schedule``,
  one item per transaction through an SQLAlchemy session, as a request handler would), for ``STEADY_SECONDS``;
  one runner process runs them. Measured: lateness p50 / p99 / max over all items.

The bare limit is a bare asyncpg commit loop (one prepared autocommit ``INSERT`` per commit, as
``bench/bare_pg.py``) run in the same scratch database right before the burst; :func:`section` takes the
suite's own ``pg`` figure instead when given. A runner commits hundreds of items per transaction, so it may pass
the bare figure: the ratio says by how much.

``python -m bench.schedule_bench`` runs it all and prints the figures; ``runner`` and ``writer`` are the halves.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from bench.common import (
    Row,
    Section,
    child_env,
    emit_json,
    pg_dsn,
    progress,
    python_child,
    run_as_services,
    run_json,
    scratch_database,
)

BURST_ITEMS = 100_000
BURST_TARGET_S = 20.0  # every item done within this of its due time
RATE_TARGET = 5000.0  # items/s
STEADY_RATE = 500
STEADY_SECONDS = 20.0
STEADY_P99_TARGET_MS = 1000.0
LEAD_SECONDS = 6.0  # the burst is due this long after the load starts (the COPY and ANALYZE fit well inside)
DRAIN_LIMIT = 120.0
BARE_SECONDS = 3.0
WRITER_CONCURRENCY = 8
KIND = "bench.reminder"
SUBJECT = "crm.notification.inbox.created"

_EFFECTS_DDL = "CREATE TABLE bench_effects (key varchar(200) NOT NULL, version int NOT NULL, note text NOT NULL)"


async def _create_tables(dsn: str) -> None:
    from sqlalchemy import text

    from crm_platform.db import create_engine, normalise_url
    from crm_platform.schedule import schedule_metadata
    from crm_platform.schema import platform_metadata

    engine = create_engine(normalise_url(dsn))
    async with engine.begin() as conn:
        await conn.run_sync(schedule_metadata.create_all)
        await conn.run_sync(platform_metadata.create_all)
        await conn.execute(text(_EFFECTS_DDL))
    await engine.dispose()


async def _bare_commits(dsn: str) -> float:
    """Commits/s of one asyncpg connection, a prepared autocommit INSERT each (as ``bench/bare_pg.py``)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE bench_commit (id bigint PRIMARY KEY, note text NOT NULL)")
        insert = await conn.prepare("INSERT INTO bench_commit (id, note) VALUES ($1, $2)")
        for i in range(500):  # warm-up
            await insert.fetch(-i - 1, "warm-up")
        count = 0
        started = time.perf_counter()
        while time.perf_counter() - started < BARE_SECONDS:
            count += 1
            await insert.fetch(count, "bench")
        return count / (time.perf_counter() - started)
    finally:
        await conn.execute("DROP TABLE IF EXISTS bench_commit")
        await conn.close()


# The runner process ------------------------------------------------------------------------------------------


async def runner(dsn: str, name: str) -> dict[str, Any]:
    """Run a ``ScheduleRunner`` (defaults, the reminder handler) until SIGTERM; return its CPU time and runs."""
    from sqlalchemy import Column, Integer, MetaData, String, Table, Text

    from crm.notification.v1 import events_pb2
    from crm_platform.db import create_engine, normalise_url
    from crm_platform.outbox import Outbox
    from crm_platform.schedule import ScheduledItem, ScheduleRunner
    from crm_platform.tuning import apply_cpu_policy

    effects = Table(
        "bench_effects",
        MetaData(),
        Column("key", String(200)),
        Column("version", Integer),
        Column("note", Text),
    )
    insert = effects.insert()
    outbox = Outbox("bench")
    runs = 0

    async def remind(session: Any, item: ScheduledItem) -> None:
        nonlocal runs
        runs += 1
        await session.execute(insert, {"key": item.key, "version": item.version, "note": item.payload["note"]})
        message = events_pb2.InboxMessageCreated(message_id=item.key, user_id=item.payload["user"], kind="reminder")
        await outbox.add(session, SUBJECT, message, subject_id=item.key, actor="scheduler")

    apply_cpu_policy("batch")  # as every service process runs by default (CRM_CPU_POLICY)
    engine = create_engine(normalise_url(dsn), connect_args={"server_settings": {"application_name": name}})
    schedule = ScheduleRunner(engine, {KIND: remind}, name=name)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    cpu = time.process_time()
    schedule.start()
    print("ready", flush=True)
    await stop.wait()
    await schedule.stop()
    cpu = time.process_time() - cpu
    await engine.dispose()
    return {"name": name, "cpu_s": cpu, "runs": runs}


@contextlib.contextmanager
def _runners(dsn: str, count: int) -> Iterator[list[dict[str, Any]]]:
    """``count`` runner processes on ``dsn``, ready; on leaving, stopped (SIGTERM), their results in the list."""
    processes = [
        subprocess.Popen(
            python_child("bench.schedule_bench", "runner", dsn, f"bench-runner-{i}"),
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for i in range(count)
    ]
    results: list[dict[str, Any]] = []
    try:
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"runner process not ready: {line!r}, exit {process.poll()}")
        yield results
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                out, _ = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                out, _ = process.communicate()
            lines = [line for line in out.splitlines() if line.strip()]
            if process.returncode == 0 and lines:
                results.append(json.loads(lines[-1]))


# The writer process ------------------------------------------------------------------------------------------


async def writer(dsn: str, rate: int, seconds: float) -> dict[str, Any]:
    """Schedule ``rate × seconds`` items due at once, one per transaction, each started on pace (up to
    ``WRITER_CONCURRENCY`` transactions in flight)."""
    from crm_platform.clock import SystemClock
    from crm_platform.db import create_engine, normalise_url, session_factory
    from crm_platform.schedule import Scheduler

    engine = create_engine(normalise_url(dsn))
    sessions = session_factory(engine)
    clock = SystemClock()
    scheduler = Scheduler(clock)
    total = int(rate * seconds)
    slots = asyncio.Semaphore(WRITER_CONCURRENCY)
    in_flight: set[asyncio.Task[None]] = set()

    async def schedule_one(i: int) -> None:
        try:
            async with sessions() as session, session.begin():
                payload = {"note": f"call back customer {i}", "user": f"u-{i % 50}"}
                await scheduler.schedule(session, kind=KIND, key=f"reminder:{i}", due_at=clock.now(), payload=payload)
        finally:
            slots.release()

    loop = asyncio.get_running_loop()
    cpu = time.process_time()
    started = loop.time()
    behind_max = 0.0
    for i in range(total):
        delay = started + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        behind_max = max(behind_max, loop.time() - (started + i / rate))
        task = asyncio.create_task(schedule_one(i))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)
    elapsed = loop.time() - started
    cpu = time.process_time() - cpu
    await engine.dispose()
    return {"written": total, "seconds": elapsed, "behind_max_s": behind_max, "cpu_ms_per_item": cpu * 1000 / total}


# The measurements --------------------------------------------------------------------------------------------


async def _wait_until_done(dsn: str, expected: int) -> float:
    """Poll until no item is pending and ``expected`` are done; return the seconds waited (raise past the limit)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    started = time.monotonic()
    try:
        while True:
            pending = await conn.fetchval("SELECT count(*) FROM scheduled_items WHERE status = 'pending'")
            if not pending and await conn.fetchval("SELECT count(*) FROM scheduled_items") >= expected:
                return time.monotonic() - started
            if time.monotonic() - started > DRAIN_LIMIT:
                raise RuntimeError(f"{pending} items still pending after {DRAIN_LIMIT:.0f} s")
            await asyncio.sleep(0.25)
    finally:
        await conn.close()


async def _outcome(dsn: str, expected: int) -> dict[str, Any]:
    """Lateness (done_at − due_at) and the exactly-once check of a finished run."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'done') AS done, min(due_at) AS first_due,"
            " max(due_at) AS last_due, max(done_at) AS last_done,"
            " percentile_disc(0.5) WITHIN GROUP (ORDER BY done_at - due_at) AS p50,"
            " percentile_disc(0.99) WITHIN GROUP (ORDER BY done_at - due_at) AS p99,"
            " max(done_at - due_at) AS worst FROM scheduled_items"
        )
        effects = await conn.fetchval("SELECT count(*) FROM bench_effects")
        twice = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM bench_effects GROUP BY key, version HAVING count(*) > 1) AS d"
        )
        events = await conn.fetchval("SELECT count(*) FROM outbox")
    finally:
        await conn.close()
    if not (row["done"] == effects == events == expected) or twice:
        raise RuntimeError(f"not exactly once: {dict(row)}, {effects} effects ({twice} twice), {events} events")
    return {
        "items": expected,
        "last_due": row["last_due"],
        "last_done": row["last_done"],
        "lateness_ms": {k: row[k].total_seconds() * 1000 for k in ("p50", "p99", "worst")},
    }


async def _load_burst(dsn: str, due: dt.datetime, spread: float = 0.0) -> None:
    """COPY ``BURST_ITEMS`` pending items due at ``due`` — or evenly over the ``spread`` seconds from it — in one
    transaction, then ANALYZE."""
    import asyncpg

    from crm_platform.schedule import PENDING

    now = dt.datetime.now(dt.UTC)
    payloads = [json.dumps({"note": f"call back customer {i}", "user": f"u-{i % 50}"}) for i in range(BURST_ITEMS)]
    records = [
        (
            f"reminder:{i}",
            KIND,
            1,
            due + dt.timedelta(seconds=spread * i / BURST_ITEMS),
            payload,
            PENDING,
            0,
            None,
            now,
            now,
            None,
        )
        for i, payload in enumerate(payloads)
    ]
    conn = await asyncpg.connect(dsn)
    try:
        columns = ["key", "kind", "version", "due_at", "payload", "status", "attempts", "last_error"]
        await conn.copy_records_to_table(
            "scheduled_items", records=records, columns=[*columns, "created_at", "updated_at", "done_at"]
        )
        await conn.execute("ANALYZE scheduled_items")
    finally:
        await conn.close()


def _cpu_ticks() -> tuple[int, int]:
    """The machine's busy and total CPU ticks so far (``/proc/stat``)."""
    with open("/proc/stat") as stat:
        ticks = [int(t) for t in stat.readline().split()[1:]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def _burst(processes: int, spread: float = 0.0) -> dict[str, Any]:
    """One burst run with ``processes`` runner processes on a fresh scratch database: every item due at one instant,
    or (``spread``) their due times evenly over that many seconds — "100,000 items due in the same minute"."""

    async def run() -> dict[str, Any]:
        async with scratch_database() as database:
            dsn = pg_dsn(database)
            await _create_tables(dsn)
            bare = await _bare_commits(dsn)
            with _runners(dsn, processes) as results:
                due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=LEAD_SECONDS)
                await _load_burst(dsn, due, spread)
                if dt.datetime.now(dt.UTC) >= due:
                    raise RuntimeError(f"the load took longer than {LEAD_SECONDS} s: the burst would not be one")
                await asyncio.sleep((due - dt.datetime.now(dt.UTC)).total_seconds())
                busy, total = _cpu_ticks()
                await _wait_until_done(dsn, BURST_ITEMS)
                busy, total = (a - b for a, b in zip(_cpu_ticks(), (busy, total), strict=True))
                outcome = await _outcome(dsn, BURST_ITEMS)
            seconds = (outcome["last_done"] - due).total_seconds()
            cpu = sum(r["cpu_s"] for r in results)
            return {
                "processes": processes,
                "spread_s": spread,
                "worst_lateness_s": outcome["lateness_ms"]["worst"] / 1000,
                "bare_commits_per_s": bare,
                "seconds_after_due": seconds,
                "items_per_s": BURST_ITEMS / seconds,
                "lateness_ms": outcome["lateness_ms"],
                "runs_by_process": [r["runs"] for r in results],
                "cpu_us_per_item": cpu * 1e6 / BURST_ITEMS if len(results) == processes else math.nan,
                "machine_busy": busy / total if total else math.nan,
            }

    figures = asyncio.run(run())
    progress(
        f"  burst, {processes} runner process(es): {BURST_ITEMS:,} done {figures['seconds_after_due']:.2f} s after "
        f"their due time ({figures['items_per_s']:,.0f} items/s; bare commit loop {figures['bare_commits_per_s']:,.0f}"
        f"/s); runs per process {figures['runs_by_process']}; {figures['cpu_us_per_item']:.0f} µs runner CPU per item; "
        f"machine {figures['machine_busy']:.0%} busy"
    )
    return figures


def _steady() -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with scratch_database() as database:
            dsn = pg_dsn(database)
            await _create_tables(dsn)
            with _runners(dsn, 1) as results:
                written = await asyncio.to_thread(
                    run_json,
                    python_child("bench.schedule_bench", "writer", dsn, str(STEADY_RATE), str(STEADY_SECONDS)),
                    STEADY_SECONDS * 3 + 60,
                )
                await _wait_until_done(dsn, written["written"])
                outcome = await _outcome(dsn, written["written"])
            return {
                "rate": STEADY_RATE,
                "writer": written,
                "lateness_ms": outcome["lateness_ms"],
                "cpu_us_per_item": results[0]["cpu_s"] * 1e6 / written["written"] if results else math.nan,
            }

    figures = asyncio.run(run())
    late = figures["lateness_ms"]
    achieved = figures["writer"]["written"] / figures["writer"]["seconds"]
    progress(
        f"  steady {STEADY_RATE}/s for {STEADY_SECONDS:.0f} s: lateness p50 {late['p50']:.0f} / "
        f"p99 {late['p99']:.0f} / max {late['worst']:.0f} ms (writer {achieved:,.0f}/s)"
    )
    return figures


def measure() -> dict[str, Any]:
    """100,000 items due within one minute (one runner process), the harder burst all due at one instant with one
    runner process and with two, then the steady stream; every figure of the section."""
    return {"minute": _burst(1, spread=60.0), "burst": [_burst(1), _burst(2)], "steady": _steady()}


def section(figures: dict[str, Any], bare_pg: dict[str, Any] | None = None) -> Section:
    """Rows for each burst (items/s against the bare commit loop; seconds after the due time against the
    target) and the steady stream's lateness. ``bare_pg``: the suite's ``pg`` figures, when it ran them."""
    rows = []
    details = []
    minute = figures.get("minute")
    if minute:
        name = f"Scheduled items, {BURST_ITEMS:,} due within one minute, 1 runner process"
        rows.append(
            Row(
                name,
                "worst lateness",
                minute["worst_lateness_s"],
                "s",
                target=f"≤ {BURST_TARGET_S:.0f} s of its due time",
                met=minute["worst_lateness_s"] <= BURST_TARGET_S,
            )
        )
        late = minute["lateness_ms"]
        details.append(
            f"Within one minute: {BURST_ITEMS:,} items COPY-loaded with due times evenly over 60 s; every item was "
            f"done at most {minute['worst_lateness_s']:.2f} s after its own due time (p50 {late['p50'] / 1000:.2f}, "
            f"p99 {late['p99'] / 1000:.2f} s) with one runner process; runner CPU {minute['cpu_us_per_item']:.0f} µs "
            "per item. This is the target as issue #17 states it; the bursts below are due all at one instant."
        )
    for burst in figures["burst"]:
        bare = (bare_pg or {}).get("commits_per_s") or burst["bare_commits_per_s"]
        name = f"Scheduled items, burst of {BURST_ITEMS:,}, {burst['processes']} runner process(es)"
        rate = burst["items_per_s"]
        rows.append(
            Row(
                name,
                "items/s",
                rate,
                "items/s",
                bare_label="bare PostgreSQL commit loop",
                bare_value=bare,
                ratio=rate / bare,
                target=f"≥ {RATE_TARGET:,.0f}/s",
                met=rate >= RATE_TARGET,
            )
        )
        rows.append(
            Row(
                name,
                "all done after due",
                burst["seconds_after_due"],
                "s",
                target=f"≤ {BURST_TARGET_S:.0f} s",
                met=burst["seconds_after_due"] <= BURST_TARGET_S,
            )
        )
        late = burst["lateness_ms"]
        details.append(
            f"Burst, {burst['processes']} runner process(es): {BURST_ITEMS:,} items COPY-loaded, all due at one "
            f"instant {LEAD_SECONDS:.0f} s ahead, runners idle and polling; the last was done "
            f"{burst['seconds_after_due']:.2f} s after it was due ({rate:,.0f} items/s); lateness p50 "
            f"{late['p50'] / 1000:.2f} / p99 {late['p99'] / 1000:.2f} / max {late['worst'] / 1000:.2f} s; items run "
            f"per process {burst['runs_by_process']}; runner CPU {burst['cpu_us_per_item']:.0f} µs per item; the "
            f"machine (2 cores: PostgreSQL, the runners and whatever else ran) was {burst['machine_busy']:.0%} busy "
            "meanwhile. Each item: its handler's `INSERT` (through the SQLAlchemy session) and `Outbox.add`; per "
            "batch of 500: the claim, one savepoint, one done-mark and the commit; two batches in flight per "
            "process while there is a backlog (`concurrency=2`). Bare commit loop on the same database just before: "
            f"{burst['bare_commits_per_s']:,.0f} commits/s. Every item was checked done, with exactly one effect row "
            "and one outbox row.",
        )
    steady = figures["steady"]
    late = steady["lateness_ms"]
    writer_info = steady["writer"]
    rows.append(
        Row(
            f"Scheduled items, steady {steady['rate']}/s due at once",
            "lateness p99",
            late["p99"],
            "ms",
            target=f"≤ {STEADY_P99_TARGET_MS:,.0f} ms",
            met=late["p99"] <= STEADY_P99_TARGET_MS,
        )
    )
    rows.append(Row(f"Scheduled items, steady {steady['rate']}/s due at once", "lateness p50", late["p50"], "ms"))
    rows.append(Row(f"Scheduled items, steady {steady['rate']}/s due at once", "lateness max", late["worst"], "ms"))
    details.append(
        f"Steady: a writer process scheduled {writer_info['written']:,} items due at once, one per transaction "
        f"(`Scheduler.schedule` through an SQLAlchemy session), at {steady['rate']}/s for {STEADY_SECONDS:.0f} s "
        f"(achieved {writer_info['written'] / writer_info['seconds']:,.0f}/s, at worst "
        f"{writer_info['behind_max_s'] * 1000:.0f} ms behind pace, {writer_info['cpu_ms_per_item']:.2f} ms CPU per "
        f"item); one runner process (its defaults: a poll every 0.25 s) ran them: lateness (done-mark − due time) p50 "
        f"{late['p50']:.0f} / p99 {late['p99']:.0f} / max {late['worst']:.0f} ms; runner CPU "
        f"{steady['cpu_us_per_item']:.0f} µs per item."
    )
    return Section("Scheduled work", rows, details)


def main(argv: list[str]) -> int:
    """``runner DSN NAME``, ``writer DSN RATE SECONDS``, or nothing: the whole measurement."""
    if argv[:1] == ["runner"] and len(argv) == 3:
        emit_json(run_as_services(runner(argv[1], argv[2])))
        return 0
    if argv[:1] == ["writer"] and len(argv) == 4:
        emit_json(run_as_services(writer(argv[1], int(argv[2]), float(argv[3]))))
        return 0
    if not argv:
        figures = measure()
        print(json.dumps(figures, indent=2, default=str))
        return 0
    print("usage: python -m bench.schedule_bench [runner DSN NAME | writer DSN RATE SECONDS]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
