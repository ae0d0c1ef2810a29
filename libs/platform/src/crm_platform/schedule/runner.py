"""Running scheduled items when due, each exactly once: :class:`ScheduleRunner`."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from crm_platform import metrics, redaction
from crm_platform.clock import Clock, SystemClock
from crm_platform.db import as_utc, is_postgres, session_factory
from crm_platform.driver import HeldConnection
from crm_platform.outbox import DEFER_AFTER_COMMIT
from crm_platform.schedule.table import DEAD, DONE, IS_DEAD, IS_FINISHED, IS_PENDING, PENDING, scheduled_items

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScheduledItem:
    """One run of a scheduled item, as claimed: the version claimed is the version run."""

    key: str
    kind: str
    version: int
    due_at: dt.datetime
    payload: dict[str, Any]
    attempts: int  # failed runs of this version before this one


Handler = Callable[[AsyncSession, ScheduledItem], Awaitable[None]]
"""Runs an item: writes its effects (and its outbox events) with the session given, never commits it."""


class UnknownKind(LookupError):
    """No handler for a scheduled item's kind (treated as a failed run: retried, then dead)."""


MAX_ERROR = 500  # characters of ``last_error`` kept

# PostgreSQL, through the asyncpg connection: claim, then mark in one statement per batch. The done-mark checks
# the version claimed, so a handler that re-scheduled its own key (a recurring item) leaves the new version
# pending; ``key = ANY`` keeps the plan on the primary key whatever the statistics say.
_CLAIM_SQL = (
    "SELECT key, kind, version, due_at, payload, attempts FROM scheduled_items"
    f" WHERE {IS_PENDING} AND due_at <= $1 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED"
)
_DONE_SQL = (
    f"UPDATE scheduled_items AS s SET status = '{DONE}', done_at = $3, updated_at = $3"
    " FROM unnest($1::varchar[], $2::int[]) AS d(key, version)"
    " WHERE s.key = ANY($1::varchar[]) AND s.key = d.key AND s.version = d.version"
)
_FAILED_SQL = (
    "UPDATE scheduled_items AS s SET status = f.status, attempts = f.attempts, due_at = f.due_at,"
    " last_error = f.error, updated_at = $7"
    " FROM unnest($1::varchar[], $2::int[], $3::varchar[], $4::int[], $5::timestamptz[], $6::text[])"
    " AS f(key, version, status, attempts, due_at, error)"
    " WHERE s.key = ANY($1::varchar[]) AND s.key = f.key AND s.version = f.version"
)
_EARLIEST_SQL = f"SELECT min(due_at) FROM scheduled_items WHERE {IS_PENDING}"
_PURGE_CHUNK = 5000


def describe_error(exc: BaseException) -> str:
    """What is kept of a failure: the exception's class and message, cut to :data:`MAX_ERROR` characters (never
    the payload; of a driver error only its SQLSTATE and constraint: :func:`crm_platform.redaction.describe_error`).
    """
    return redaction.describe_error(exc)[:MAX_ERROR]


@dataclass(frozen=True)
class _Failure:
    item: ScheduledItem
    error: str
    status: str  # pending (to retry) or dead
    due_at: dt.datetime


class ScheduleRunner:
    """Runs due items of ``scheduled_items`` with their kind's handler; one per process, safe with many replicas
    on one database.

    Each pass (:meth:`run_due`) is one transaction: claim up to ``batch_size`` due pending items (on PostgreSQL
    ``FOR UPDATE SKIP LOCKED``, so replicas take different ones), run each item's handler with one session on
    that transaction, mark the batch done in one statement, commit. An item's effects and its done-mark commit
    together: a crash anywhere before the commit rolls both back and the item runs again (after a restart, or on
    another replica); after the commit it never runs again. The version claimed is the version run: a
    re-schedule of a claimed item waits for the commit (the row is locked) and runs next time. A failed run's
    effects are rolled back and the item is retried after an exponential back-off (``backoff_base`` × 2^(n-1),
    at most ``backoff_cap`` seconds), then marked ``dead`` with its error after ``max_attempts`` runs. A kind
    without a handler fails the same way (and is logged).

    The loop (:meth:`start`) makes a pass whenever something is due, else waits until the next due time it knows
    of (the earliest pending item, or one :meth:`notice` reported), at most ``poll_interval`` seconds of real
    time — the due test reads ``clock``, so a test moves time with a ``ManualClock``. While passes come back
    full (a backlog), up to ``concurrency`` run at once on PostgreSQL, each on a connection of its own: one
    batch's round trips then overlap another's work in this process (measured on the burst of
    ``bench/schedule_bench.py``: 2,900 → 3,800–3,900 items/s for one process). A database that goes away is
    logged and retried with a back-off of up to 5 s; the loop never dies of it. Once a second the loop refreshes
    the gauges, once a minute it purges done and cancelled items older than ``retention``.
    """

    def __init__(
        self,
        database: AsyncEngine | async_sessionmaker[AsyncSession],
        handlers: Mapping[str, Handler],
        *,
        clock: Clock | None = None,
        batch_size: int = 500,
        poll_interval: float = 0.25,
        max_attempts: int = 5,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        retention: dt.timedelta = dt.timedelta(days=7),
        concurrency: int = 2,
        name: str = "schedule",
    ) -> None:
        if isinstance(database, AsyncEngine):
            engine, sessions = database, session_factory(database)
        else:
            bind = database.kw.get("bind")
            if not isinstance(bind, AsyncEngine):
                raise TypeError("ScheduleRunner needs an engine, or a session factory bound to one")
            engine, sessions = bind, database
        self._engine = engine
        self._sessions = sessions
        self._handlers = dict(handlers)
        self._clock = clock or SystemClock()
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._retention = retention
        self._name = name
        self._postgres = is_postgres(engine)
        # Passes in flight at once on PostgreSQL, each on a connection of its own (SQLite has one writer).
        self._lanes = max(1, concurrency) if self._postgres else 1
        self._held = [HeldConnection(engine) for _ in range(self._lanes)] if self._postgres else []
        self._wake = asyncio.Event()  # the main loop's: look now (stop, or an item noticed)
        self._backlog = asyncio.Event()  # the helper lanes': the main loop claimed a full batch
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._noticed: dt.datetime | None = None
        self._last_gauges = float("-inf")
        self._last_purge = float("-inf")

    def start(self) -> None:
        """Run due items in the background until :meth:`stop`."""
        self._stopping = False
        self._tasks = [asyncio.create_task(self._poll(), name=f"{self._name}-runner")]
        self._tasks += [
            asyncio.create_task(self._help(lane), name=f"{self._name}-runner-{lane}") for lane in range(1, self._lanes)
        ]

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop after the batch in hand has committed (cancelled after ``timeout``: its items run again later)."""
        self._stopping = True
        self._wake.set()
        self._backlog.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            if pending:
                log.warning("schedule runner stopped before its batch committed", extra={"runner": self._name})
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        for held in self._held:
            await held.close()

    def notice(self, due_at: dt.datetime) -> None:
        """An item was scheduled for ``due_at`` (the ``notify`` of this process's :class:`Scheduler`): look for
        due items by then, though the next poll be later."""
        if self._noticed is None or due_at < self._noticed:
            self._noticed = due_at
        self._wake.set()

    def backoff(self, attempts: int) -> float:
        """Seconds before the next run after ``attempts`` failed runs: base × 2^(attempts-1), capped."""
        return float(min(self._backoff_base * 2 ** max(attempts - 1, 0), self._backoff_cap))

    async def run_due(self) -> int:
        """One pass: claim the due items (up to ``batch_size``), run them and commit; return how many ran (done or
        failed). For tests and tools; :meth:`start` runs passes in a loop."""
        return await self._pass(0)

    async def _pass(self, lane: int) -> int:
        if self._postgres:
            return await self._run_due_postgres(self._held[lane])
        return await self._run_due_sqlalchemy()

    async def _run_due_postgres(self, held: HeldConnection) -> int:
        """The pass on PostgreSQL: begun, claimed, marked and committed through the asyncpg connection.

        The handlers get an SQLAlchemy session bound to the same connection in autocommit mode, so that they
        run inside this transaction (their savepoints included) and neither begin nor commit it; their
        after-commit hand-overs (outbox events to publish) wait until this transaction has committed.
        """
        deferred: list[Callable[[], None]] = []
        async with held.use() as (conn, driver), driver.transaction():
            rows = await driver.fetch(_CLAIM_SQL, self._clock.now(), self._batch_size)
            if not rows:
                return 0
            items = [ScheduledItem(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]
            session = self._sessions(bind=conn)
            session.info[DEFER_AFTER_COMMIT] = deferred
            try:
                async with session.begin():
                    failures = await self._run_items(session, items)
            finally:
                await session.close()
            now = self._clock.now()
            done = [item for item in items if item.key not in failures]
            if done:
                await driver.execute(_DONE_SQL, [i.key for i in done], [i.version for i in done], now)
            if failures:
                fs = list(failures.values())
                await driver.execute(
                    _FAILED_SQL,
                    [f.item.key for f in fs],
                    [f.item.version for f in fs],
                    [f.status for f in fs],
                    [f.item.attempts + 1 for f in fs],
                    [f.due_at for f in fs],
                    [f.error for f in fs],
                    now,
                )
        for hand_over in deferred:
            hand_over()
        self._record(done, failures)
        return len(items)

    async def _run_due_sqlalchemy(self) -> int:
        """The pass on SQLite: the same transaction through a session, without ``SKIP LOCKED`` (one process).

        The claim is an ``UPDATE … RETURNING``, so the transaction holds SQLite's write lock from its first
        statement: no other writer can re-schedule or cancel a claimed item before the commit (a plain
        ``SELECT`` would not even begin the transaction with the sqlite3 driver).
        """
        t = scheduled_items
        now = self._clock.now()
        due = select(t.c.key).where(text(IS_PENDING), t.c.due_at <= now).order_by(t.c.due_at).limit(self._batch_size)
        claim = (
            update(t)
            .where(t.c.key.in_(due))
            .values(updated_at=now)
            .returning(t.c.key, t.c.kind, t.c.version, t.c.due_at, t.c.payload, t.c.attempts)
        )
        async with self._sessions() as session, session.begin():
            rows = (await session.execute(claim)).all()
            if not rows:
                return 0
            items = [ScheduledItem(r[0], r[1], r[2], as_utc(r[3]), json.loads(r[4]), r[5]) for r in rows]
            items.sort(key=lambda item: item.due_at)  # RETURNING comes in no particular order
            failures = await self._run_items(session, items)
            now = self._clock.now()
            done = [item for item in items if item.key not in failures]
            by_version = (t.c.key == bindparam("k"), t.c.version == bindparam("v"))
            if done:
                await session.execute(
                    update(t).where(*by_version).values(status=DONE, done_at=now, updated_at=now),
                    [{"k": i.key, "v": i.version} for i in done],
                )
            if failures:
                await session.execute(
                    update(t)
                    .where(*by_version)
                    .values(
                        status=bindparam("s"),
                        attempts=bindparam("a"),
                        due_at=bindparam("d"),
                        last_error=bindparam("e"),
                        updated_at=now,
                    ),
                    [
                        {"k": f.item.key, "v": f.item.version, "s": f.status, "a": f.item.attempts + 1}
                        | {"d": f.due_at, "e": f.error}
                        for f in failures.values()
                    ],
                )
        self._record(done, failures)
        return len(items)

    async def _run_items(self, session: AsyncSession, items: Sequence[ScheduledItem]) -> dict[str, _Failure]:
        """Run each item's handler; return the failed runs by key.

        The handlers run one after the other inside one savepoint for the batch. If one raises, the batch rolls
        back to that savepoint (the claim's row locks stay: they were taken before it) and runs again item by
        item, each in a savepoint of its own, so that only the failed ones' effects are undone. A savepoint per
        item on every batch was measured 2.8 to 4 times slower on PostgreSQL (2,700–2,800 against 640–990
        items/s, one runner, an INSERT and an ``Outbox.add`` per item): two more round trips per item, and a
        subtransaction each, past the 64 that PostgreSQL caches per transaction.
        """
        failures: dict[str, _Failure] = {}
        runnable: list[tuple[ScheduledItem, Handler]] = []
        for item in items:
            handler = self._handlers.get(item.kind)
            if handler is None:
                failures[item.key] = self._failure(item, UnknownKind(f"no handler for kind {item.kind!r}"))
            else:
                runnable.append((item, handler))
        if not runnable:
            return failures
        try:
            async with session.begin_nested():
                for item, handler in runnable:
                    await handler(session, item)
            return failures
        except Exception as exc:  # noqa: BLE001 - rolled back to the batch's savepoint: find which failed
            if len(runnable) == 1:  # no need to run it again to know
                failures[runnable[0][0].key] = self._failure(runnable[0][0], exc)
                return failures
        for item, handler in runnable:
            try:
                async with session.begin_nested():
                    await handler(session, item)
            except Exception as exc:  # noqa: BLE001 - its savepoint rolled back; the item is retried or dead
                failures[item.key] = self._failure(item, exc)
        return failures

    def _failure(self, item: ScheduledItem, exc: Exception) -> _Failure:
        attempts = item.attempts + 1
        error = describe_error(exc)
        fields = {"runner": self._name, "item": item.key, "kind": item.kind, "attempt": attempts, "error": error}
        if attempts >= self._max_attempts:
            log.error("scheduled item dead after its last attempt", extra=fields)
            return _Failure(item, error, DEAD, item.due_at)
        retry_at = self._clock.now() + dt.timedelta(seconds=self.backoff(attempts))
        log.warning("scheduled item failed; will retry", extra={**fields, "retry_at": retry_at.isoformat()})
        return _Failure(item, error, PENDING, retry_at)

    def _record(self, done: Sequence[ScheduledItem], failures: Mapping[str, _Failure]) -> None:
        """Count the committed batch's runs, and the lateness of the items done."""
        now = self._clock.now()
        for kind, count in Counter(item.kind for item in done).items():
            metrics.SCHEDULE_RUNS.labels(kind, "done").inc(count)
        for (kind, status), count in Counter((f.item.kind, f.status) for f in failures.values()).items():
            metrics.SCHEDULE_RUNS.labels(kind, "dead" if status == DEAD else "retry").inc(count)
        lateness: dict[str, Any] = {}
        for item in done:
            histogram = lateness.get(item.kind)
            if histogram is None:
                histogram = lateness[item.kind] = metrics.SCHEDULE_LATENESS.labels(item.kind)
            histogram.observe((now - item.due_at).total_seconds())

    async def _poll(self) -> None:
        """The main loop: a pass whenever something is due, else a wait until the next due time known here, at
        most ``poll_interval`` (items other processes schedule are found by polling)."""
        backoff = 0.1
        while not self._stopping:
            try:
                wait = await self._until_due()
                if wait <= 0:
                    ran = await self._pass(0)
                    if ran >= self._batch_size:
                        self._backlog.set()
                    # Due yet nothing claimed: another replica (or lane) holds those rows; look again shortly.
                    wait = 0.0 if ran else min(0.02, self._poll_interval)
                await self._housekeeping()
                backoff = 0.1
            except Exception as exc:  # noqa: BLE001 - the runner outlives any failure (database down) and retries
                self._warn_and_back_off(exc, backoff)
                wait, backoff = backoff, min(backoff * 2, 5.0)
            if self._stopping:
                return
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
            self._wake.clear()

    async def _help(self, lane: int) -> None:
        """A helper lane: passes on a connection of its own while there is a backlog (the main loop claimed a
        full batch), so that one batch's round trips to the database overlap another's work here."""
        backoff = 0.1
        while True:
            await self._backlog.wait()
            if self._stopping:
                return
            try:
                if await self._pass(lane) < self._batch_size:
                    self._backlog.clear()
                backoff = 0.1
            except Exception as exc:  # noqa: BLE001 - as the main loop
                self._warn_and_back_off(exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _warn_and_back_off(self, exc: Exception, backoff: float) -> None:
        log.warning(
            "scheduled items not run; retrying",
            extra={"runner": self._name, "error": describe_error(exc), "retry_in": backoff},
        )

    async def _until_due(self) -> float:
        """Seconds until the next due time known here (the earliest pending item, or one this process noticed),
        at most ``poll_interval``; zero or less when something is due."""
        if self._postgres:
            async with self._held[0].use() as (_, driver):
                earliest = await driver.fetchval(_EARLIEST_SQL)
        else:
            t = scheduled_items
            async with self._engine.connect() as conn:
                earliest = (await conn.execute(select(func.min(t.c.due_at)).where(text(IS_PENDING)))).scalar()
        candidates = [as_utc(earliest)] if earliest is not None else []
        if self._noticed is not None:
            candidates.append(self._noticed)
            self._noticed = None
        if not candidates:
            return self._poll_interval
        return min(self._poll_interval, (min(candidates) - self._clock.now()).total_seconds())

    async def _housekeeping(self) -> None:
        # Off the hot path: the gauges at most once a second, the purge once a minute.
        now = asyncio.get_running_loop().time()
        if now - self._last_gauges >= 1.0:
            self._last_gauges = now
            await self.refresh_gauges()
        if now - self._last_purge >= 60.0:
            self._last_purge = now
            await self.purge()

    async def refresh_gauges(self) -> None:
        """Set the backlog, oldest-due-age and dead gauges from the table."""
        t = scheduled_items
        now = self._clock.now()
        due = select(func.count(), func.min(t.c.due_at)).where(text(IS_PENDING), t.c.due_at <= now)
        async with self._engine.connect() as conn:
            backlog, oldest = (await conn.execute(due)).one()
            dead = (await conn.execute(select(func.count()).select_from(t).where(text(IS_DEAD)))).scalar_one()
        metrics.SCHEDULE_BACKLOG.set(backlog)
        metrics.SCHEDULE_OLDEST_DUE_AGE.set((now - as_utc(oldest)).total_seconds() if oldest is not None else 0.0)
        metrics.SCHEDULE_DEAD.set(dead)

    async def purge(self) -> int:
        """Delete done and cancelled items finished more than ``retention`` ago (dead ones stay, for someone to
        look at); return how many. In chunks, each its own short transaction."""
        t = scheduled_items
        cutoff = self._clock.now() - self._retention
        old = (text(IS_FINISHED), t.c.updated_at < cutoff)
        purged = 0
        while True:
            chunk = select(t.c.key).where(*old).limit(_PURGE_CHUNK)
            async with self._engine.begin() as conn:
                # The conditions again on the delete itself: a row re-scheduled meanwhile is pending, and stays.
                count = (await conn.execute(delete(t).where(t.c.key.in_(chunk), *old))).rowcount
            purged += count
            if count < _PURGE_CHUNK:
                return purged
