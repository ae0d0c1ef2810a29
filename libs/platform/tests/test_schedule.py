"""Scheduled work against a real database (SQLite, PostgreSQL): each item runs once, in its newest version, when
due — through failures, re-schedules, a database that goes away and runner processes killed mid-batch."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY
from schedule_worker import KIND, effects, effects_metadata, reminder
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from crm_platform.clock import ManualClock, SystemClock, utcnow
from crm_platform.db import create_engine, normalise_url, session_factory
from crm_platform.outbox import Outbox, PendingEvent
from crm_platform.schedule import (
    CANCELLED,
    DEAD,
    DONE,
    PENDING,
    ScheduledItem,
    Scheduler,
    ScheduleRunner,
    schedule_metadata,
    scheduled_items,
)
from crm_platform.schema import outbox as outbox_table
from crm_platform.schema import platform_metadata

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
WORKER = Path(__file__).with_name("schedule_worker.py")


@dataclass
class Env:
    """A fresh database with the schedule, outbox and effects tables."""

    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    runners: list[ScheduleRunner] = field(default_factory=list)

    def runner(self, handlers: Any, **options: Any) -> ScheduleRunner:
        """A runner on this database, stopped (its connections given back) when the test ends."""
        made = ScheduleRunner(self.engine, handlers, **options)
        self.runners.append(made)
        return made

    async def close(self) -> None:
        for runner in self.runners:
            await runner.stop()
        await self.engine.dispose()

    async def count(self, table: Any, *conditions: Any) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(table).where(*conditions))).scalar_one())

    async def item(self, key: str) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(scheduled_items).where(scheduled_items.c.key == key))).one()

    async def effects(self) -> list[tuple[str, int, str]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(effects.c.key, effects.c.version, effects.c.note).order_by(effects.c.key))
            return [(row.key, row.version, row.note) for row in rows]


async def _make_env(url: str) -> Env:
    engine = create_engine(normalise_url(url))
    async with engine.begin() as conn:
        for metadata in (schedule_metadata, platform_metadata, effects_metadata):
            await conn.run_sync(metadata.create_all)
    return Env(url, engine, session_factory(engine))


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[Env]:
    """SQLite, then PostgreSQL."""
    made = await _make_env(db_url)
    yield made
    await made.close()


@pytest.fixture
async def pg_env(postgres_url: str) -> AsyncIterator[Env]:
    """PostgreSQL only."""
    made = await _make_env(postgres_url)
    yield made
    await made.close()


def _kind() -> str:
    """A kind of the test's own, so that the process-wide metrics it reads are its alone."""
    return f"test.{uuid.uuid4().hex[:8]}"


async def _schedule(env: Env, clock: Any, key: str, due_at: dt.datetime, kind: str = KIND, **payload: Any) -> int:
    async with env.sessions() as session, session.begin():
        return await Scheduler(clock).schedule(session, kind=kind, key=key, due_at=due_at, payload=payload)


async def _cancel(env: Env, clock: Any, key: str) -> bool:
    async with env.sessions() as session, session.begin():
        return await Scheduler(clock).cancel(session, key)


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_scheduling_a_key_again_replaces_the_item_and_bumps_its_version(env: Env) -> None:
    clock = ManualClock(T0)
    assert await _schedule(env, clock, "reminder:t1", T0 + MINUTE, note="first") == 1
    row = await env.item("reminder:t1")
    assert (row.kind, row.version, row.status, row.attempts, row.payload) == (KIND, 1, PENDING, 0, '{"note":"first"}')
    clock.advance(dt.timedelta(seconds=5))
    assert await _schedule(env, clock, "reminder:t1", T0 + 2 * MINUTE, kind="test.other", note="second") == 2
    row = await env.item("reminder:t1")
    assert (row.kind, row.version, row.payload) == ("test.other", 2, '{"note":"second"}')
    assert row.due_at.replace(tzinfo=dt.UTC) == T0 + 2 * MINUTE
    assert row.created_at.replace(tzinfo=dt.UTC) == T0  # the first schedule's
    assert row.updated_at.replace(tzinfo=dt.UTC) == T0 + dt.timedelta(seconds=5)
    assert await env.count(scheduled_items) == 1  # one row per key
    # A due time in another zone is the same instant.
    beijing = dt.timezone(dt.timedelta(hours=8))
    await _schedule(env, clock, "reminder:t2", dt.datetime(2026, 3, 2, 17, 0, tzinfo=beijing))
    assert (await env.item("reminder:t2")).due_at.replace(tzinfo=dt.UTC) == T0
    async with env.sessions() as session, session.begin():
        with pytest.raises(ValueError, match="timezone"):
            await Scheduler(clock).schedule(session, kind=KIND, key="k", due_at=dt.datetime(2026, 1, 1), payload={})
        with pytest.raises(ValueError, match="key"):
            await Scheduler(clock).schedule(session, kind=KIND, key="k" * 201, due_at=T0, payload={})


async def test_a_rolled_back_schedule_leaves_nothing(env: Env) -> None:
    clock = ManualClock(T0)
    with pytest.raises(RuntimeError):
        async with env.sessions() as session, session.begin():
            await Scheduler(clock).schedule(session, kind=KIND, key="reminder:t1", due_at=T0, payload={})
            raise RuntimeError("the business change failed")
    assert await env.count(scheduled_items) == 0


async def test_a_rescheduled_item_runs_once_in_its_newest_version_only(env: Env) -> None:
    clock = ManualClock(T0)
    runner = env.runner({KIND: reminder("r")}, clock=clock)
    await _schedule(env, clock, "reminder:t1", T0 + MINUTE, note="v1")
    await _schedule(env, clock, "reminder:t1", T0 + 3 * MINUTE, note="v2")  # before v1 was due
    clock.set(T0 + 2 * MINUTE)  # v1's due time has passed, but v1 is no more
    assert await runner.run_due() == 0
    clock.set(T0 + 3 * MINUTE)
    assert await runner.run_due() == 1
    assert await runner.run_due() == 0
    clock.advance(MINUTE)
    assert await runner.run_due() == 0
    assert await env.effects() == [("reminder:t1", 2, "v2")]
    row = await env.item("reminder:t1")
    assert (row.status, row.version, row.done_at.replace(tzinfo=dt.UTC)) == (DONE, 2, T0 + 3 * MINUTE)
    assert await env.count(outbox_table) == 1
    # Scheduled again once done, it runs again, as a new version.
    assert await _schedule(env, clock, "reminder:t1", clock.now(), note="v3") == 3
    assert await runner.run_due() == 1
    assert await env.effects() == [("reminder:t1", 2, "v2"), ("reminder:t1", 3, "v3")]


async def test_a_cancelled_item_never_runs(env: Env) -> None:
    clock = ManualClock(T0)
    runner = env.runner({KIND: reminder("r")}, clock=clock)
    await _schedule(env, clock, "reminder:t1", T0 + MINUTE)
    await _schedule(env, clock, "reminder:t2", T0 + MINUTE)
    assert await _cancel(env, clock, "reminder:t1") is True
    assert await _cancel(env, clock, "reminder:t1") is False  # already cancelled
    assert await _cancel(env, clock, "reminder:unknown") is False
    clock.advance(2 * MINUTE)
    assert await runner.run_due() == 1
    assert await env.effects() == [("reminder:t2", 1, "")]
    assert (await env.item("reminder:t1")).status == CANCELLED
    assert await _cancel(env, clock, "reminder:t2") is False  # it ran: too late to cancel


async def test_items_run_only_once_the_clock_passes_their_due_time(env: Env) -> None:
    kind = _kind()
    clock = ManualClock(T0)
    runner = env.runner({kind: reminder("r")}, clock=clock, batch_size=2)
    for minutes in (3, 1, 2, 1, 1):
        await _schedule(env, clock, f"reminder:{minutes}:{uuid.uuid4().hex[:4]}", T0 + minutes * MINUTE, kind=kind)
    assert await runner.run_due() == 0
    clock.set(T0 + MINUTE - dt.timedelta(microseconds=1))
    assert await runner.run_due() == 0
    clock.set(T0 + MINUTE)
    assert [await runner.run_due() for _ in range(3)] == [2, 1, 0]  # batches of two at most
    clock.set(T0 + 2 * MINUTE + dt.timedelta(seconds=30))  # runs 30 s late
    assert await runner.run_due() == 1
    assert await runner.run_due() == 0
    clock.set(T0 + 10 * MINUTE)
    assert await runner.run_due() == 1
    assert sorted(key.split(":")[1] for key, _, _ in await env.effects()) == ["1", "1", "1", "2", "3"]
    assert _sample("crm_schedule_lateness_seconds_count", kind=kind) == 5
    assert _sample("crm_schedule_lateness_seconds_sum", kind=kind) == 30 + 7 * 60  # 0, 0, 0, 30 s, 7 min
    assert _sample("crm_schedule_runs_total", kind=kind, outcome="done") == 5


async def test_the_runner_loop_follows_a_manual_clock(env: Env) -> None:
    clock = ManualClock(T0)
    runner = env.runner({KIND: reminder("r")}, clock=clock, poll_interval=0.02)
    for minutes in (1, 2, 3):
        await _schedule(env, clock, f"reminder:{minutes}", T0 + minutes * MINUTE)
    runner.start()
    try:
        for minutes in (1, 2, 3):
            await asyncio.sleep(0.15)
            assert len(await env.effects()) == minutes - 1  # not yet due: not run, however long the real wait
            clock.advance(MINUTE)

            async def ran(minutes: int = minutes) -> bool:
                return len(await env.effects()) == minutes

            await _until(ran)
        await asyncio.sleep(0.15)
        assert [key for key, _, _ in await env.effects()] == ["reminder:1", "reminder:2", "reminder:3"]
    finally:
        await runner.stop()


async def test_a_failing_handler_is_retried_with_back_off_then_dead(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    kind = _kind()
    clock = ManualClock(T0)
    calls: list[int] = []

    async def broken(session: AsyncSession, item: ScheduledItem) -> None:
        calls.append(item.attempts)
        await reminder("r")(session, item)  # its effects are written …
        raise ValueError("the branch calendar is unavailable")  # … then undone

    runner = env.runner({kind: broken}, clock=clock, max_attempts=3, backoff_base=10, backoff_cap=15)
    assert [runner.backoff(n) for n in (1, 2, 3)] == [10, 15, 15]
    await _schedule(env, clock, "reminder:t1", T0, kind=kind)
    with caplog.at_level(logging.WARNING, logger="crm_platform.schedule.runner"):
        assert await runner.run_due() == 1
    row = await env.item("reminder:t1")
    assert (row.status, row.attempts, row.last_error) == (PENDING, 1, "ValueError: the branch calendar is unavailable")
    assert row.due_at.replace(tzinfo=dt.UTC) == T0 + dt.timedelta(seconds=10)
    assert any(getattr(r, "item", None) == "reminder:t1" and r.attempt == 1 for r in caplog.records)  # type: ignore[attr-defined]
    clock.advance(dt.timedelta(seconds=9))
    assert await runner.run_due() == 0  # backing off
    clock.advance(dt.timedelta(seconds=1))
    assert await runner.run_due() == 1
    assert (await env.item("reminder:t1")).due_at.replace(tzinfo=dt.UTC) == clock.now() + dt.timedelta(seconds=15)
    clock.advance(dt.timedelta(seconds=15))
    assert await runner.run_due() == 1
    row = await env.item("reminder:t1")
    assert (row.status, row.attempts, row.last_error) == (DEAD, 3, "ValueError: the branch calendar is unavailable")
    clock.advance(dt.timedelta(hours=1))
    assert await runner.run_due() == 0  # dead: never again
    assert calls == [0, 1, 2]
    assert await env.effects() == [] and await env.count(outbox_table) == 0
    assert _sample("crm_schedule_runs_total", kind=kind, outcome="retry") == 2
    assert _sample("crm_schedule_runs_total", kind=kind, outcome="dead") == 1
    await runner.refresh_gauges()
    assert _sample("crm_schedule_dead") == 1
    # Scheduled again, the key is pending afresh.
    await _schedule(env, clock, "reminder:t1", clock.now(), kind=kind)
    row = await env.item("reminder:t1")
    assert (row.status, row.attempts, row.last_error, row.version) == (PENDING, 0, None, 2)


async def test_the_error_kept_is_the_exception_class_and_a_cut_message(env: Env) -> None:
    clock = ManualClock(T0)

    async def verbose(session: AsyncSession, item: ScheduledItem) -> None:
        raise KeyError("x" * 2000)

    runner = env.runner({KIND: verbose}, clock=clock)
    await _schedule(env, clock, "reminder:t1", T0, note="the customer's mobile is never logged")
    await runner.run_due()
    error = (await env.item("reminder:t1")).last_error
    assert error.startswith("KeyError: 'xxx") and len(error) == 500


async def test_a_failed_run_commits_none_of_its_effects_and_the_others_all_of_theirs(env: Env) -> None:
    clock = ManualClock(T0)
    handed_over: list[PendingEvent] = []
    ok = reminder("r", Outbox("test", notify=handed_over.extend))

    async def picky(session: AsyncSession, item: ScheduledItem) -> None:
        await ok(session, item)  # effect row and outbox event written …
        if item.payload["note"] == "bad":
            raise RuntimeError("rule broken after the effect was written")  # … and rolled back

    runner = env.runner({KIND: picky}, clock=clock)
    for i, note in enumerate(["good", "good", "bad", "good"]):
        await _schedule(env, clock, f"reminder:{i}", T0 + i * dt.timedelta(seconds=1), note=note)
    clock.advance(MINUTE)
    assert await runner.run_due() == 4  # one batch
    assert await env.effects() == [("reminder:0", 1, "good"), ("reminder:1", 1, "good"), ("reminder:3", 1, "good")]
    assert await env.count(outbox_table) == 3
    statuses = {key: (await env.item(key)).status for key in ("reminder:0", "reminder:1", "reminder:2", "reminder:3")}
    assert statuses == {"reminder:0": DONE, "reminder:1": DONE, "reminder:2": PENDING, "reminder:3": DONE}
    # Every event handed to the relay after the commit is in the outbox (none of the failed run's). Some of the
    # good ones may be left to the relay's scan of the table instead: a savepoint rollback drops the hand-over.
    async with env.engine.connect() as conn:
        stored = set((await conn.execute(select(outbox_table.c.id))).scalars())
    assert {event.id for event in handed_over} <= stored


async def test_an_unknown_kind_is_a_failure_retried_then_dead(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    kind = _kind()
    clock = ManualClock(T0)
    runner = env.runner({KIND: reminder("r")}, clock=clock, max_attempts=2, backoff_base=1)
    await _schedule(env, clock, "reminder:t1", T0, kind=kind)
    await _schedule(env, clock, "reminder:t2", T0)
    with caplog.at_level(logging.WARNING, logger="crm_platform.schedule.runner"):
        assert await runner.run_due() == 2
    assert await env.effects() == [("reminder:t2", 1, "")]  # the known kind ran beside it
    assert (await env.item("reminder:t1")).last_error == f"UnknownKind: no handler for kind '{kind}'"
    assert any("UnknownKind" in str(getattr(r, "error", "")) for r in caplog.records)
    clock.advance(dt.timedelta(seconds=1))
    assert await runner.run_due() == 1
    assert (await env.item("reminder:t1")).status == DEAD
    assert _sample("crm_schedule_runs_total", kind=kind, outcome="dead") == 1


async def test_a_handler_may_schedule_its_own_key_again(env: Env) -> None:
    clock = ManualClock(T0)
    scheduler = Scheduler(clock)

    async def every_day(session: AsyncSession, item: ScheduledItem) -> None:
        await reminder("r")(session, item)
        next_time = item.due_at + dt.timedelta(days=1)
        await scheduler.schedule(session, kind=item.kind, key=item.key, due_at=next_time, payload=item.payload)

    runner = env.runner({KIND: every_day}, clock=clock)
    await _schedule(env, clock, "digest:rm1", T0, note="daily")
    for day in range(3):
        clock.set(T0 + dt.timedelta(days=day, minutes=1))
        assert await runner.run_due() == 1
        assert await runner.run_due() == 0
    assert [version for _, version, _ in await env.effects()] == [1, 2, 3]
    row = await env.item("digest:rm1")
    assert (row.status, row.version, row.due_at.replace(tzinfo=dt.UTC)) == (PENDING, 4, T0 + dt.timedelta(days=3))


async def test_finished_items_are_purged_after_the_retention(env: Env) -> None:
    clock = ManualClock(T0)

    async def fails(session: AsyncSession, item: ScheduledItem) -> None:
        raise RuntimeError("no")

    runner = env.runner({KIND: reminder("r"), "test.fails": fails}, clock=clock, max_attempts=1, retention=MINUTE)
    for key in ("done", "cancelled", "dead", "pending"):
        await _schedule(env, clock, key, T0, kind="test.fails" if key == "dead" else KIND)
    await _schedule(env, clock, "pending", T0 + dt.timedelta(days=1))
    await _cancel(env, clock, "cancelled")
    assert await runner.run_due() == 2
    clock.advance(MINUTE)
    assert await runner.purge() == 0  # not older than the retention yet
    clock.advance(dt.timedelta(seconds=1))
    assert await runner.purge() == 2
    async with env.engine.connect() as conn:
        left = set((await conn.execute(select(scheduled_items.c.key))).scalars())
    assert left == {"dead", "pending"}


async def test_the_gauges_show_the_backlog_its_age_and_the_dead(env: Env) -> None:
    clock = ManualClock(T0)
    runner = env.runner({}, clock=clock, max_attempts=1)
    await _schedule(env, clock, "a", T0 - dt.timedelta(seconds=90))
    await _schedule(env, clock, "b", T0 - dt.timedelta(seconds=30))
    await _schedule(env, clock, "c", T0 + MINUTE)  # not due yet: not in the backlog
    await runner.refresh_gauges()
    assert (_sample("crm_schedule_backlog"), _sample("crm_schedule_oldest_due_age_seconds")) == (2, 90)
    assert _sample("crm_schedule_dead") == 0
    assert await runner.run_due() == 2  # no handler for the kind: dead at the first attempt
    await runner.refresh_gauges()
    assert (_sample("crm_schedule_backlog"), _sample("crm_schedule_oldest_due_age_seconds")) == (0, 0)
    assert _sample("crm_schedule_dead") == 2


async def test_the_scheduler_notifies_after_the_commit_only(env: Env) -> None:
    clock = ManualClock(T0)
    noticed: list[dt.datetime] = []
    scheduler = Scheduler(clock, notify=noticed.append)
    async with env.sessions() as session, session.begin():
        await scheduler.schedule(session, kind=KIND, key="a", due_at=T0 + 2 * MINUTE, payload={})
        await scheduler.schedule(session, kind=KIND, key="b", due_at=T0 + MINUTE, payload={})
        assert noticed == []
    assert noticed == [T0 + MINUTE]  # the earliest of the transaction
    with pytest.raises(RuntimeError):
        async with env.sessions() as session, session.begin():
            await scheduler.schedule(session, kind=KIND, key="c", due_at=T0, payload={})
            raise RuntimeError("rolled back")
    assert noticed == [T0 + MINUTE]


async def test_an_item_scheduled_in_this_process_runs_before_the_next_poll(env: Env) -> None:
    runner = env.runner({KIND: reminder("r")}, poll_interval=30.0)
    scheduler = Scheduler(notify=runner.notice)
    runner.start()
    try:
        await asyncio.sleep(0.1)  # the runner found nothing and waits for its next poll, 30 s away
        async with env.sessions() as session, session.begin():
            await scheduler.schedule(
                session, kind=KIND, key="a", due_at=utcnow() + dt.timedelta(seconds=0.2), payload={}
            )

        async def ran() -> bool:
            return len(await env.effects()) == 1

        await _until(ran, timeout=5)
    finally:
        await runner.stop()


@pytest.mark.postgres
async def test_a_reschedule_during_the_run_waits_for_it_and_takes_effect_next_time(pg_env: Env) -> None:
    env = pg_env
    clock = ManualClock(T0)
    started, release = asyncio.Event(), asyncio.Event()
    record = reminder("r")

    async def slow(session: AsyncSession, item: ScheduledItem) -> None:
        await record(session, item)
        started.set()
        await release.wait()

    runner = env.runner({KIND: slow}, clock=clock)
    await _schedule(env, clock, "reminder:t1", T0, note="v1")
    run = asyncio.create_task(runner.run_due())
    await started.wait()
    reschedule = asyncio.create_task(_schedule(env, clock, "reminder:t1", T0 + MINUTE, note="v2"))
    cancel = asyncio.create_task(_cancel(env, clock, "reminder:t1"))
    await asyncio.sleep(0.3)
    assert not reschedule.done() and not cancel.done()  # both wait for the claimed row
    release.set()
    assert await run == 1
    assert await reschedule == 2
    await cancel  # ran after the re-schedule or before it: either way it saw the committed run
    row = await env.item("reminder:t1")
    assert await env.effects() == [("reminder:t1", 1, "v1")]  # the version claimed is the version run
    if row.status == PENDING:  # the cancel came first (found the run done), then the re-schedule
        assert row.version == 2
        clock.advance(MINUTE)
        assert await runner.run_due() == 1
        assert await env.effects() == [("reminder:t1", 1, "v1"), ("reminder:t1", 2, "v2")]
    else:  # the re-schedule came first, then the cancel withdrew it
        assert (row.status, row.version) == (CANCELLED, 2)


@pytest.mark.postgres
async def test_the_runner_outlives_the_database_going_away(pg_env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env = pg_env
    clock = SystemClock()
    runner = env.runner({KIND: reminder("r")}, clock=clock, poll_interval=0.05)
    database = normalise_url(env.url).database
    server = env.url.replace("postgresql+asyncpg", "postgresql").rsplit("/", 1)[0] + "/postgres"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def done(count: int) -> bool:
        try:
            return await env.count(scheduled_items, scheduled_items.c.status == DONE) == count
        except Exception:  # the test's own pooled connections died too
            return False

    runner.start()
    try:
        await _schedule(env, clock, "before", utcnow())
        await _until(lambda: done(1))
        with caplog.at_level(logging.WARNING, logger="crm_platform.schedule.runner"):
            # The database goes away: every connection to it dies, and new ones are refused for a while.
            await admin(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
            try:
                await admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")
                await asyncio.sleep(1.0)
            finally:
                await admin(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
            for attempt in range(3):
                try:
                    await _schedule(env, clock, "after", utcnow())
                    break
                except Exception:
                    if attempt == 2:
                        raise
            await _until(lambda: done(2))
        retries = [r for r in caplog.records if r.getMessage() == "scheduled items not run; retrying"]
        assert retries and all(r.retry_in <= 5.0 for r in retries)  # type: ignore[attr-defined]
        assert runner._tasks and not any(task.done() for task in runner._tasks)  # still running
    finally:
        await runner.stop()
    assert await env.effects() == [("after", 1, ""), ("before", 1, "")]


# Exactly once across runner processes killed mid-batch ---------------------------------------------------------


async def _schedule_due_now(env: Env, count: int) -> None:
    """``count`` items due now, through the Scheduler, in one transaction."""
    clock = SystemClock()
    scheduler = Scheduler(clock)
    now = clock.now()
    async with env.sessions() as session, session.begin():
        for i in range(count):
            payload = {"note": f"call back customer {i}"}
            await scheduler.schedule(session, kind=KIND, key=f"reminder:{i:05d}", due_at=now, payload=payload)


async def _start_worker(url: str, name: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), url, name, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    assert (await asyncio.wait_for(process.stdout.readline(), timeout=20)).strip() == b"ready"
    return process


async def _stop_workers(*processes: asyncio.subprocess.Process) -> None:
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            await asyncio.wait_for(process.wait(), timeout=15)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _assert_each_ran_exactly_once(env: Env, count: int) -> dict[str, int]:
    """Every item done, with exactly one effect row and one outbox event; return the effect rows by runner."""
    async with env.engine.connect() as conn:
        status = scheduled_items.c.status
        statuses: dict[str, int] = dict((await conn.execute(select(status, func.count()).group_by(status))).all())
        per_item = (
            select(func.count().label("n")).select_from(effects).group_by(effects.c.key, effects.c.version).subquery()
        )
        runs = (await conn.execute(select(func.count(), func.min(per_item.c.n), func.max(per_item.c.n)))).one()
        by_runner: dict[str, int] = dict(
            (await conn.execute(select(effects.c.runner, func.count()).group_by(effects.c.runner))).all()
        )
        subjects = set((await conn.execute(select(outbox_table.c.subject).distinct())).scalars())
    assert statuses == {DONE: count}
    assert tuple(runs) == (count, 1, 1)  # every (key, version) once: none lost, none twice
    assert await env.count(outbox_table) == count
    assert subjects == {"crm.test.reminder.due"}
    return by_runner


async def _done(env: Env) -> int:
    return await env.count(scheduled_items, scheduled_items.c.status == DONE)


async def _in_transaction(url: str, application: str) -> bool:
    """Whether the named process's PostgreSQL session has a transaction open (it is mid-batch)."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND xact_start IS NOT NULL",
                application,
            )
        )
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.postgres
async def test_two_runner_processes_one_killed_mid_batch_run_each_item_exactly_once(pg_env: Env) -> None:
    env = pg_env
    count = 10_000
    await _schedule_due_now(env, count)
    a = await _start_worker(env.url, "runner-a")
    b = await _start_worker(env.url, "runner-b")
    restarted = None
    try:
        await _until(lambda: _done_at_least(env, 2000), timeout=30)
        await _until(lambda: _in_transaction(env.url, "runner-a"), timeout=10)
        a.send_signal(signal.SIGKILL)  # mid-batch: its transaction is open, its claimed items locked
        await a.wait()
        killed_at = await _done(env)
        assert killed_at < count, "the kill must land while items are still pending"
        restarted = await _start_worker(env.url, "runner-a2")
        await _until(lambda: _done_at_least(env, count), timeout=40)
    finally:
        await _stop_workers(*(p for p in (a, b, restarted) if p is not None))
    by_runner = await _assert_each_ran_exactly_once(env, count)
    assert by_runner.get("runner-a", 0) > 0 and by_runner.get("runner-b", 0) > 0  # both shared the work


async def _done_at_least(env: Env, count: int) -> bool:
    return await _done(env) >= count


@pytest.mark.slow
async def test_a_sqlite_runner_process_killed_mid_batch_runs_each_item_exactly_once(sqlite_url: str) -> None:
    env = await _make_env(sqlite_url)
    try:
        count = 10_000
        await _schedule_due_now(env, count)
        first = await _start_worker(sqlite_url, "runner-1")
        restarted = None
        try:
            await _until(lambda: _done_at_least(env, 2000), timeout=30)
            first.send_signal(signal.SIGKILL)
            await first.wait()
            assert await _done(env) < count, "the kill must land while items are still pending"
            restarted = await _start_worker(sqlite_url, "runner-2")
            await _until(lambda: _done_at_least(env, count), timeout=40)
        finally:
            await _stop_workers(*(p for p in (first, restarted) if p is not None))
        by_runner = await _assert_each_ran_exactly_once(env, count)
        assert by_runner.get("runner-1", 0) > 0 and by_runner.get("runner-2", 0) > 0
    finally:
        await env.close()


async def test_handlers_see_the_payload_and_attempts_as_claimed(env: Env) -> None:
    clock = ManualClock(T0)
    seen: list[ScheduledItem] = []

    async def look(session: AsyncSession, item: ScheduledItem) -> None:
        seen.append(item)
        await session.execute(insert(effects).values(key=item.key, version=item.version, runner="r", note="x"))

    runner = ScheduleRunner(env.sessions, {"test.look": look}, clock=clock)  # a session factory works too
    env.runners.append(runner)
    await _schedule(env, clock, "sla-warning:tk1:2", T0, kind="test.look", ticket="tk1", level=2, 名字="李明")
    assert await runner.run_due() == 1
    assert seen == [
        ScheduledItem("sla-warning:tk1:2", "test.look", 1, T0, {"ticket": "tk1", "level": 2, "名字": "李明"}, 0)
    ]
