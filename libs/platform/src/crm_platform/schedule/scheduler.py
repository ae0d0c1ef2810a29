"""Writing scheduled items, inside the caller's transaction: :class:`Scheduler`."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import event, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from crm_platform.clock import Clock, SystemClock
from crm_platform.outbox import DEFER_AFTER_COMMIT
from crm_platform.schedule.table import CANCELLED, IS_PENDING, PENDING, scheduled_items

Notify = Callable[[dt.datetime], None]

_NOTICES = "crm_schedule_notices"  # session.info: {notify: earliest due time scheduled in this transaction}


@event.listens_for(Session, "after_commit")
def _notify_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released: nothing is committed yet
    notices: dict[Notify, dt.datetime] = session.info.pop(_NOTICES, {})
    deferred: list[Callable[[], None]] | None = session.info.get(DEFER_AFTER_COMMIT)
    for notify, due_at in notices.items():
        if deferred is not None:  # the session's commit is not the database's (see DEFER_AFTER_COMMIT)
            deferred.append(functools.partial(notify, due_at))
        else:
            notify(due_at)


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_NOTICES, None)


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("due_at must be timezone-aware")
    return value.astimezone(dt.UTC)  # SQLite stores the wall time as written: always UTC


def encode_payload(payload: Mapping[str, Any]) -> str:
    """The stored form of a payload (compact JSON)."""
    if not isinstance(payload, Mapping):
        raise TypeError("a scheduled item's payload is a JSON object (a mapping)")
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


@functools.cache
def _upsert(dialect: str) -> Any:
    """The insert-or-replace of one item, its values given as parameters: one statement per dialect, which
    SQLAlchemy compiles once (built anew per call, 10,000 schedules on SQLite took 10.1 s instead of 4.5 s)."""
    t = scheduled_items
    new = (pg_insert if dialect == "postgresql" else sqlite_insert)(t)
    return new.on_conflict_do_update(
        index_elements=[t.c.key],
        set_={
            "kind": new.excluded.kind,
            "version": t.c.version + 1,
            "due_at": new.excluded.due_at,
            "payload": new.excluded.payload,
            "status": PENDING,
            "attempts": 0,
            "last_error": None,
            "updated_at": new.excluded.updated_at,
            "done_at": None,
        },
    ).returning(t.c.version)


class Scheduler:
    """Schedules, re-schedules and cancels items in the caller's own transaction, as ``Outbox.add`` writes events:
    the item exists once that transaction commits, and not at all if it rolls back.

    ``notify``, when given, is called after the commit with the earliest due time the transaction scheduled
    (e.g. :meth:`crm_platform.schedule.ScheduleRunner.notice` of this process's runner, so an item due sooner
    than its next poll runs on time).
    """

    def __init__(self, clock: Clock | None = None, *, notify: Notify | None = None) -> None:
        self._clock = clock or SystemClock()
        self._notify = notify

    async def schedule(
        self, session: AsyncSession, *, kind: str, key: str, due_at: dt.datetime, payload: Mapping[str, Any]
    ) -> int:
        """Schedule ``kind`` under ``key`` at ``due_at`` with ``payload``; return the item's version.

        A key scheduled again replaces kind, due time and payload, and is pending again with its attempts reset
        and its version one higher, whatever its status was: only that newest version runs. A re-schedule of an
        item whose run is in progress waits for that run's commit (the runner holds the row), then takes effect
        for the next run.
        """
        if not key or len(key) > 200:
            raise ValueError("a scheduled item's key is 1 to 200 characters")
        if not kind or len(kind) > 64:
            raise ValueError("a scheduled item's kind is 1 to 64 characters")
        due = _utc(due_at)
        now = self._clock.now()
        row = {
            "key": key,
            "kind": kind,
            "version": 1,
            "due_at": due,
            "payload": encode_payload(payload),
            "status": PENDING,
            "attempts": 0,
            "last_error": None,
            "created_at": now,
            "updated_at": now,
            "done_at": None,
        }
        upsert = _upsert(session.get_bind().dialect.name)
        version = int((await session.execute(upsert, row)).scalar_one())
        if self._notify is not None:
            notices = session.sync_session.info.setdefault(_NOTICES, {})
            earliest = notices.get(self._notify)
            notices[self._notify] = due if earliest is None else min(earliest, due)
        return version

    async def cancel(self, session: AsyncSession, key: str) -> bool:
        """Cancel the pending item ``key``; return whether there was one (``False`` once it ran, died or was
        cancelled). A cancel racing the item's run waits for that run's commit, then finds it done."""
        t = scheduled_items
        result = await session.execute(
            update(t).where(t.c.key == key, text(IS_PENDING)).values(status=CANCELLED, updated_at=self._clock.now())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]
