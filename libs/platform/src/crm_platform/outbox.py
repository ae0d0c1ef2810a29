"""The transactional outbox and its relay to NATS JetStream.

A state change and its event are written in one transaction (:meth:`Outbox.add`). When that transaction
commits, the session hands the committed events to this process's relay, which publishes them at once
from memory (no read back: the latency of an event is its publish round trip); a background task marks
them sent, all that were acknowledged within ``mark_interval`` in one statement.
The table stays the source of truth: every poll interval the relay also claims unpublished rows older
than a short grace period (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so replicas share the work) — the
events of a replica that crashed, or of a publish that failed — publishes them and marks them sent.
Every publish carries ``Nats-Msg-Id`` = event id and waits for its acknowledgement before the mark, so a
crash between publish and mark only re-publishes: JetStream drops duplicates inside its window and the
consumers' inboxes drop any that arrive later.

A batch writer (the customer import) may store many events in one row, a bundle (:func:`bundle_rows`,
``crm.common.v1.EventBundle``): one row to insert and to mark instead of thousands. The relay publishes each event
of a bundle as its own message, exactly as if it had a row of its own, and marks the row once all of them are
acknowledged; a batch it publishes always holds whole bundles.

On PostgreSQL the hot statements (the outbox insert once the transaction has begun, the claim, the mark)
go straight through the asyncpg connection of the same pooled connection (:mod:`crm_platform.driver`); on
SQLite everything goes through SQLAlchemy. Sent rows are marked (``published_at``), not deleted, and purged
after ``retention`` by the relay's housekeeping: a day of what was published, for diagnosis.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.message import Message
from sqlalchemy import case, delete, event, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from crm.common.v1 import envelope_pb2
from crm_platform import metrics, telemetry
from crm_platform.bus import Bus
from crm_platform.db import is_postgres
from crm_platform.driver import driver_in_transaction, pooled_driver
from crm_platform.ids import new_id
from crm_platform.redaction import describe_error
from crm_platform.schema import outbox as outbox_table

log = logging.getLogger(__name__)

_AFTER_COMMIT = "crm_after_commit"


_PENDING = "crm_outbox_pending"
_DRIVER = "crm_outbox_driver"  # the asyncpg connection of the session's current transaction, once begun
_MAX_FRESH = 50_000
_FRESH_IN_FLIGHT = 4  # batches published from memory and still awaiting their acknowledgements

BUNDLE_SUBJECT = "crm.outbox.bundle"  # the subject column of a row holding an EventBundle (never published)
MAX_BUNDLE_EVENTS = 1000  # events in one bundle, at most: a relay batch holds whole bundles

_INSERT_SQL = "INSERT INTO outbox (id, subject, envelope, created_at) VALUES ($1, $2, $3, $4)"
# A claimed bundle comes without its envelope (NULL): the relay takes as many rows as make one batch of events
# (:func:`_fitting`), then reads the envelopes of the bundles among them (:func:`_bundle_ids`).
_CLAIMED = f"id, subject, CASE WHEN subject = '{BUNDLE_SUBJECT}' THEN NULL ELSE envelope END AS envelope"
_CLAIM_SQL = f"SELECT {_CLAIMED} FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
_CLAIM_AGED_SQL = (
    f"SELECT {_CLAIMED} FROM outbox WHERE published_at IS NULL AND created_at <= $2"
    " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
)
_BUNDLES_SQL = "SELECT id, envelope FROM outbox WHERE id = ANY($1::varchar[])"
_MARK_SQL = "UPDATE outbox SET published_at = $2 WHERE id = ANY($1::varchar[]) AND published_at IS NULL"


class PendingEvent(NamedTuple):
    """An event committed in this process and not yet published (same fields as an outbox row)."""

    id: str
    subject: str
    envelope: bytes


Notify = Callable[[Sequence[PendingEvent]], None]


def bundle_rows(events: Sequence[PendingEvent]) -> list[PendingEvent]:
    """Outbox rows holding ``events``, in order, :data:`MAX_BUNDLE_EVENTS` to a row: insert each one's ``id``,
    ``subject`` and ``envelope`` as a row's, and hand them over once committed as events'
    (:meth:`Outbox.handed_over`)."""
    rows = []
    for start in range(0, len(events), MAX_BUNDLE_EVENTS):
        part = events[start : start + MAX_BUNDLE_EVENTS]
        bundle = envelope_pb2.EventBundle(
            events=[envelope_pb2.BundledEvent(id=e.id, subject=e.subject, envelope=e.envelope) for e in part]
        )
        rows.append(PendingEvent(new_id(), BUNDLE_SUBJECT, bundle.SerializeToString()))
    return rows


def unbundled(rows: Sequence[Sequence[Any]]) -> list[tuple[str, str, bytes]]:
    """The events of outbox rows ``(id, subject, envelope)``, in order: a bundle's, each as a row of its own."""
    events: list[tuple[str, str, bytes]] = []
    for row in rows:
        if row[1] == BUNDLE_SUBJECT:
            events.extend((e.id, e.subject, e.envelope) for e in envelope_pb2.EventBundle.FromString(row[2]).events)
        else:
            events.append((row[0], row[1], row[2]))
    return events


def _weight(row: Sequence[Any]) -> int:
    """How many events a row counts for in a batch (a bundle: as many as it may hold)."""
    return MAX_BUNDLE_EVENTS if row[1] == BUNDLE_SUBJECT else 1


def _fitting(rows: Iterable[Sequence[Any]], limit: int) -> tuple[int, int]:
    """How many of the first ``rows`` make one batch of at most ``limit`` events (at least one row: whole
    bundles), and how many events they count for (:func:`_weight`)."""
    count = weight = 0
    for row in rows:
        if count and weight + _weight(row) > limit:
            break
        count += 1
        weight += _weight(row)
    return count, weight


def _bundle_ids(rows: Sequence[Sequence[Any]]) -> list[str]:
    """The claimed rows that are bundles, their envelope still to read (see :data:`_CLAIMED`)."""
    return [row[0] for row in rows if row[2] is None]


def _with_envelopes(rows: Sequence[Sequence[Any]], envelopes: dict[str, bytes]) -> list[Sequence[Any]]:
    """Claimed rows, each bundle with its envelope from ``envelopes`` (by id)."""
    return [(row[0], row[1], envelopes[row[0]]) if row[2] is None else row for row in rows]


DEFER_AFTER_COMMIT = "crm_defer_after_commit"
"""``session.info`` key: a list to which the session's after-commit hand-overs are appended instead of being
run, for a session whose commit is not the database's (it runs inside a transaction its owner commits
later, through the driver); the owner runs them once that commit succeeded."""


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released: nothing is committed until the outermost transaction is
    session.info.pop(_DRIVER, None)
    committed: list[PendingEvent] = session.info.pop(_PENDING, [])
    callbacks = session.info.pop(_AFTER_COMMIT, ())
    deferred: list[Callable[[], None]] | None = session.info.get(DEFER_AFTER_COMMIT)
    for callback in callbacks:
        if deferred is not None:
            deferred.append(functools.partial(callback, committed))
        else:
            callback(committed)


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_DRIVER, None)
    session.info.pop(_AFTER_COMMIT, None)
    session.info.pop(_PENDING, None)


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


TYPE_URL_PREFIX = "type.crm/"  # of every event payload's type URL (``type.crm/<full message name>``)


def make_envelope(
    subject: str, source: str, message: Message, *, subject_id: str, actor: str, event_id: str | None = None
) -> envelope_pb2.EventEnvelope:
    """Wrap ``message`` in the shared envelope with the current trace context."""
    occurred = timestamp_pb2.Timestamp()
    occurred.FromDatetime(utcnow())
    payload = any_pb2.Any()
    payload.Pack(message, type_url_prefix=TYPE_URL_PREFIX)
    traceparent, tracestate = telemetry.current_traceparent()
    return envelope_pb2.EventEnvelope(
        id=event_id or new_id(),
        type=subject,
        source=source,
        occurred_at=occurred,
        subject_id=subject_id,
        actor=actor,
        traceparent=traceparent,
        tracestate=tracestate,
        schema_version=1,
        payload=payload,
    )


class Outbox:
    """Writes events into the outbox table inside the caller's transaction."""

    def __init__(self, source: str, notify: Notify | None = None) -> None:
        self.source = source
        self._notify = notify

    async def add(self, session: AsyncSession, subject: str, message: Message, *, subject_id: str, actor: str) -> str:
        """Add an event to the session's transaction; return its id."""
        envelope = make_envelope(subject, self.source, message, subject_id=subject_id, actor=actor)
        await self.add_envelope(session, envelope)
        return envelope.id

    def prepare(self, subject: str, message: Message, *, subject_id: str, actor: str) -> PendingEvent:
        """An event for a caller that writes the outbox row itself, in a statement of its own making (its
        ``id``, ``subject`` and ``envelope`` are the row's columns); hand it over once that committed."""
        envelope = make_envelope(subject, self.source, message, subject_id=subject_id, actor=actor)
        return PendingEvent(envelope.id, envelope.type, envelope.SerializeToString())

    def handed_over(self, committed: Sequence[PendingEvent]) -> None:
        """Events the caller has committed to the outbox table (see :meth:`prepare`): publish them now, as
        :meth:`add` does after the session's commit. Were the process to stop first, the relay's table scan
        would publish them later."""
        if self._notify is not None and committed:
            self._notify(committed)

    async def add_envelope(self, session: AsyncSession, envelope: envelope_pb2.EventEnvelope) -> None:
        """Add a ready envelope to the session's transaction."""
        data = envelope.SerializeToString()
        info = session.sync_session.info
        driver = info.get(_DRIVER)
        if driver is None and session.get_bind().dialect.name == "postgresql":
            driver = await driver_in_transaction(await session.connection())
            if driver is not None:
                info[_DRIVER] = driver
        if driver is not None:
            await driver.execute(_INSERT_SQL, envelope.id, envelope.type, data, utcnow())
        else:  # SQLite, or the transaction's first statement (SQLAlchemy sends BEGIN with it)
            await session.execute(
                insert(outbox_table).values(id=envelope.id, subject=envelope.type, envelope=data, created_at=utcnow())
            )
        if self._notify is not None:
            info.setdefault(_PENDING, []).append(PendingEvent(envelope.id, envelope.type, data))
            info.setdefault(_AFTER_COMMIT, set()).add(self._notify)


async def _finish(tasks: set[asyncio.Task[None]], timeout: float) -> None:
    """Wait up to ``timeout`` for ``tasks``, then cancel those still running."""
    _, pending = await asyncio.wait(tasks, timeout=max(timeout, 0.01))
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class OutboxRelay:
    """Publishes committed outbox rows to JetStream; one per process, safe with many replicas."""

    def __init__(
        self,
        engine: AsyncEngine,
        bus: Bus,
        *,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        publish_timeout: float = 5.0,
        retention: dt.timedelta = dt.timedelta(hours=24),
        scan_grace: float = 2.0,
        mark_interval: float = 0.05,
    ) -> None:
        self._engine = engine
        self._bus = bus
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._publish_timeout = publish_timeout
        self._retention = retention
        self._scan_grace = scan_grace
        self._mark_interval = mark_interval
        self._fresh: deque[PendingEvent] = deque()
        self._fresh_weight = 0  # the events in _fresh (a bundle counted as MAX_BUNDLE_EVENTS)
        self._wake = asyncio.Event()
        self._stopping = False
        self._last_scan = 0.0
        self._task: asyncio.Task[None] | None = None
        self._postgres = is_postgres(engine)
        self._last_gauges = 0.0
        self._last_purge = 0.0
        self._to_mark: list[str] = []
        self._marker: asyncio.Task[None] | None = None
        self._fresh_in_flight: set[asyncio.Task[None]] = set()
        self._fresh_error: Exception | None = None

    def wake(self, committed: Sequence[PendingEvent] = ()) -> None:
        """Hand over events this process just committed, to publish now (called after such a commit)."""
        if self._fresh_weight < _MAX_FRESH:  # beyond that (broker down), the table alone holds them
            self._fresh.extend(committed)
            self._fresh_weight += sum(map(_weight, committed))
        self._wake.set()

    def start(self) -> None:
        """Run the relay in the background."""
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self, flush_timeout: float = 5.0) -> None:
        """Publish what is pending, then stop; all of it within ``flush_timeout`` (what is left unpublished
        stays in the table for the next start, or another replica, to publish)."""
        self._stopping = True
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + flush_timeout
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=flush_timeout)
            except TimeoutError:
                log.warning("outbox relay stopped before its backlog was published")
            self._task = None
        # The batches still awaiting acknowledgements, then the last marks (an unmarked row would only be
        # published again, as a duplicate).
        if self._fresh_in_flight:
            await _finish(set(self._fresh_in_flight), deadline - loop.time())
        if self._marker is not None:  # only now: a batch finishing above may have started one
            await _finish({self._marker}, deadline - loop.time())

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                while self._fresh or self._fresh_error is not None:
                    try:
                        await self._publish_fresh()
                    except Exception:
                        self._fresh.clear()  # their rows stay unpublished: the scan takes them from the table
                        self._fresh_weight = 0
                        raise
                loop_time = asyncio.get_running_loop().time()
                if self._stopping or loop_time - self._last_scan >= self._poll_interval:
                    self._last_scan = loop_time
                    if self._stopping and self._fresh_in_flight:  # let them finish rather than publish twice
                        await asyncio.wait(self._fresh_in_flight, timeout=self._publish_timeout)
                    # Rows younger than the grace period are most likely in flight on the path above.
                    min_age = 0.0 if self._stopping else self._scan_grace
                    await self.publish_pending(min_age=min_age)
                backoff = 0.1
                await self._housekeeping()
            except Exception as exc:  # noqa: BLE001 - the relay must outlive any failure and retry
                metrics.OUTBOX_PUBLISH_ERRORS.inc()
                log.warning("outbox publish failed; retrying", extra={"error": repr(exc), "retry_in": backoff})
                if self._stopping:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self._stopping:
                return
            if not self._fresh:
                with contextlib.suppress(TimeoutError):  # the poll tick: look again even without a wake-up
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval)
            self._wake.clear()

    async def _publish_fresh(self) -> None:
        """Publish events just committed here, straight from memory; their acknowledgements and mark follow in
        the background.

        Up to ``_FRESH_IN_FLIGHT`` batches await their acknowledgements at once, so an event committed while
        the previous one waits for its acknowledgement is written at once instead of queueing behind it (the
        writes keep commit order). When a batch fails, the events still in memory are dropped: their rows stay
        unpublished and the scan republishes them; the error reaches the loop, which backs off. The mark does
        not hold up the next events either (it is bookkeeping: a row published and not yet marked is at worst
        published again by the scan, and dropped as a duplicate).
        """
        if self._fresh_error is not None:
            error, self._fresh_error = self._fresh_error, None
            raise error
        while len(self._fresh_in_flight) >= _FRESH_IN_FLIGHT:
            await asyncio.wait(self._fresh_in_flight, return_when=asyncio.FIRST_COMPLETED)
        count, weight = _fitting(self._fresh, self._batch_size)
        batch = [self._fresh.popleft() for _ in range(count)]
        self._fresh_weight -= weight
        if not batch:
            return
        sent = asyncio.Event()
        task = asyncio.create_task(self._publish_fresh_batch(batch, sent.set), name="outbox-publish")
        self._fresh_in_flight.add(task)
        task.add_done_callback(self._fresh_in_flight.discard)
        written = asyncio.ensure_future(sent.wait())
        try:
            await asyncio.wait((task, written), return_when=asyncio.FIRST_COMPLETED)
        finally:
            written.cancel()

    async def _publish_fresh_batch(self, batch: list[PendingEvent], sent: Callable[[], object]) -> None:
        events = unbundled(batch)
        try:
            await self._bus.publish_batch(events, self._publish_timeout, sent=sent)
        except Exception as exc:  # noqa: BLE001 - handed to the relay loop, which logs it and backs off
            self._fresh_error = exc
            self._wake.set()
            return
        metrics.OUTBOX_PUBLISHED.inc(len(events))
        self._to_mark.extend(e.id for e in batch)  # the rows: a bundle's once, all of its events acknowledged
        if self._marker is None or self._marker.done():
            self._marker = asyncio.create_task(self._mark_published(), name="outbox-mark")

    async def _mark_published(self) -> None:
        """Mark the rows published from memory, all that queued up within ``mark_interval`` in one statement
        (at a steady trickle, one statement per event would cost more than its publish)."""
        while self._to_mark:
            if not self._stopping:
                await asyncio.sleep(self._mark_interval)
            ids, self._to_mark = self._to_mark, []
            try:
                if self._postgres:
                    async with pooled_driver(self._engine) as driver:
                        await driver.execute(_MARK_SQL, ids, utcnow())
                else:
                    async with self._engine.begin() as conn:
                        await conn.execute(
                            update(outbox_table)
                            .where(outbox_table.c.id.in_(ids), outbox_table.c.published_at.is_(None))
                            .values(published_at=utcnow())
                        )
            except Exception as exc:  # noqa: BLE001 - the scan re-publishes them; JetStream drops the copies
                metrics.OUTBOX_PUBLISH_ERRORS.inc()
                log.warning("marking published events failed", extra={"error": describe_error(exc), "events": len(ids)})

    async def publish_batch(self, min_age: float = 0.0) -> int:
        """Claim, publish and mark one batch of unpublished rows at least ``min_age`` seconds old; return how
        many (0 when none are pending)."""
        if self._postgres:
            count = await self._publish_batch_postgres(min_age, None)
        else:
            count = await self._publish_batch_sqlalchemy(min_age)
        metrics.OUTBOX_PUBLISHED.inc(count)
        return count

    async def publish_pending(self, min_age: float = 0.0) -> int:
        """Publish every unpublished row at least ``min_age`` seconds old, batch after batch; return how many.

        On PostgreSQL two batches are in flight: while one waits for its acknowledgements, its mark and its
        commit, the next is claimed (``SKIP LOCKED`` passes over the rows the first holds) and written to the
        broker, so neither the broker nor the database waits for the other. Batches are written in claim
        order; only a failed batch, published again later, comes out of order (as any retry does).
        """
        if not self._postgres:
            total = 0
            while count := await self.publish_batch(min_age):
                total += count
            return total
        total = 0
        in_flight: list[asyncio.Task[int]] = []
        try:
            while True:
                sent = asyncio.Event()
                batch = asyncio.create_task(self._publish_batch_postgres(min_age, sent.set))
                in_flight.append(batch)
                written = asyncio.ensure_future(sent.wait())
                try:
                    await asyncio.wait((batch, written), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    written.cancel()
                if len(in_flight) == 2:  # at most two: the one before must be done before the next claim
                    total += await in_flight.pop(0)
                if batch.done() and (batch.exception() is not None or batch.result() == 0):
                    break  # it claimed nothing, or failed (awaiting it below raises)
            while in_flight:
                total += await in_flight.pop(0)
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
        metrics.OUTBOX_PUBLISHED.inc(total)
        return total

    async def _publish_batch_postgres(self, min_age: float, sent: Callable[[], object] | None) -> int:
        # One transaction: claim (rows locked, other replicas skip them), publish, mark, commit. A crash
        # anywhere before the commit leaves the rows unmarked, to be published again (as duplicates).
        async with pooled_driver(self._engine) as driver, driver.transaction():
            if min_age > 0:
                claimed = await driver.fetch(
                    _CLAIM_AGED_SQL, self._batch_size, utcnow() - dt.timedelta(seconds=min_age)
                )
            else:
                claimed = await driver.fetch(_CLAIM_SQL, self._batch_size)
            rows = claimed[: _fitting(claimed, self._batch_size)[0]]
            if not rows:
                return 0
            if bundles := _bundle_ids(rows):
                rows = _with_envelopes(rows, dict(await driver.fetch(_BUNDLES_SQL, bundles)))
            events = unbundled(rows)
            if sent is None:
                await self._publish(events)
            else:
                await self._bus.publish_batch(events, self._publish_timeout, sent=sent)
            await driver.execute(_MARK_SQL, [row[0] for row in rows], utcnow())
        return len(events)

    async def _publish_batch_sqlalchemy(self, min_age: float) -> int:
        c = outbox_table.c
        envelope = case((c.subject == BUNDLE_SUBJECT, None), else_=c.envelope)  # as _CLAIMED
        query = select(c.id, c.subject, envelope).where(c.published_at.is_(None)).order_by(c.id)
        if min_age > 0:
            query = query.where(c.created_at <= utcnow() - dt.timedelta(seconds=min_age))
        query = query.limit(self._batch_size)
        async with self._engine.begin() as conn:
            claimed = (await conn.execute(query)).all()
            rows: Sequence[Sequence[Any]] = claimed[: _fitting(claimed, self._batch_size)[0]]
            if not rows:
                return 0
            if bundles := _bundle_ids(rows):
                read = select(c.id, c.envelope).where(c.id.in_(bundles))
                rows = _with_envelopes(rows, {row[0]: row[1] for row in await conn.execute(read)})
            events = unbundled(rows)
            await self._publish(events)
            await conn.execute(
                update(outbox_table).where(c.id.in_([row[0] for row in rows])).values(published_at=utcnow())
            )
        return len(events)

    async def _publish(self, events: Sequence[tuple[str, str, bytes]]) -> None:
        """Publish ``(id, subject, envelope)`` events and wait for every acknowledgement, within one deadline."""
        await self._bus.publish_batch(events, self._publish_timeout)

    async def _housekeeping(self) -> None:
        # Off the hot path: gauges at most once a second, the purge of old sent rows once a minute.
        now = asyncio.get_running_loop().time()
        if now - self._last_gauges >= 1.0:
            self._last_gauges = now
            await self._refresh_gauges()
        if now - self._last_purge >= 60.0:
            self._last_purge = now
            async with self._engine.begin() as conn:
                cutoff = utcnow() - self._retention
                await conn.execute(delete(outbox_table).where(outbox_table.c.published_at < cutoff))

    async def _refresh_gauges(self) -> None:
        async with self._engine.connect() as conn:
            count, oldest = (
                await conn.execute(
                    select(func.count(), func.min(outbox_table.c.created_at)).where(
                        outbox_table.c.published_at.is_(None)
                    )
                )
            ).one()
        metrics.OUTBOX_BACKLOG.set(count)
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=dt.UTC)  # SQLite returns naive datetimes
        metrics.OUTBOX_OLDEST_AGE.set((utcnow() - oldest).total_seconds() if oldest else 0)
