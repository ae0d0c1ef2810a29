"""The organisation re-announced: every branch, team, user, staff contact and calendar as it is now.

The identity stream keeps 30 days; a service deployed later would never hear of a branch created before. So
once a week (and on ``python -m crm_gateway announce-org``) the gateway publishes one ``*.announced`` event per
branch (``BranchChanged``), team (``TeamChanged``), user (``UserChanged``) and calendar (``CalendarChanged``,
removed branch calendars included, without ``calendar``), plus each stored staff contact again as
``crm.identity.user.contact_changed`` (sealed; the notification service's copy). The consumers keep the newest
fact (by time, calendars by version), so an announcement never undoes a change, and repeating one is harmless.

The events go through the outbox in batches of :data:`BATCH_SIZE` per transaction, walking the tables in key
order with a cursor. The weekly run is a scheduled item (``crm_platform.schedule``, kind and key
``org-announce``), run exactly once across the gateway's replicas: each run announces one batch and, in the same
transaction, re-schedules itself — at once with the cursor while there is more, else seven days after the
announcement began. A replica killed mid-way leaves the item pending at the last committed cursor.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_gateway import events
from crm_gateway.identity import branches, calendars, teams, users
from crm_gateway.staff_contacts import CONTACT_CHANGED, StaffContacts
from crm_platform.outbox import Outbox, utcnow
from crm_platform.schedule import PENDING, ScheduledItem, Scheduler, scheduled_items

log = logging.getLogger(__name__)

BATCH_SIZE = 500
KIND = KEY = "org-announce"
PERIOD = dt.timedelta(days=7)
ACTOR = "system:org-announce"
PHASES = ("branches", "teams", "users", "contacts", "calendars")

Cursor = dict[str, Any]  # {"phase": one of PHASES, "after": the last key announced, or None}


class Announcer:
    """Writes the announcement's events into the outbox, a batch at a time."""

    def __init__(self, outbox: Outbox, contacts: StaffContacts, batch_size: int = BATCH_SIZE) -> None:
        self._outbox = outbox
        self._contacts = contacts
        self.batch_size = batch_size

    async def announce_batch(self, session: AsyncSession, cursor: Cursor | None) -> tuple[Counter[str], Cursor | None]:
        """Announce up to ``batch_size`` entities from ``cursor`` (None: the beginning) in ``session``'s
        transaction; answer what was announced, by phase, and the cursor to go on from (None: all done)."""
        cursor = cursor or {"phase": PHASES[0], "after": None}
        counts: Counter[str] = Counter()
        room = self.batch_size
        phase_index, after = PHASES.index(cursor["phase"]), cursor["after"]
        while room > 0:
            phase = PHASES[phase_index]
            last, announced = await self._announce(session, phase, after, room)
            counts[phase] += announced
            room -= announced
            if room == 0:  # the batch is full: go on from here (an empty next batch just moves on)
                return counts, {"phase": phase, "after": last}
            if phase_index + 1 == len(PHASES):
                return counts, None
            phase_index, after = phase_index + 1, None
        return counts, None  # pragma: no cover - the loop returns

    async def announce_all(self, sessions: async_sessionmaker[AsyncSession]) -> Counter[str]:
        """The whole organisation, one transaction per batch; answer what was announced, by phase."""
        total: Counter[str] = Counter()
        cursor: Cursor | None = None
        while True:
            async with sessions() as session, session.begin():
                counts, cursor = await self.announce_batch(session, cursor)
            total.update(counts)
            if cursor is None:
                return total

    async def _announce(self, session: AsyncSession, phase: str, after: str | None, limit: int) -> tuple[Any, int]:
        """Announce up to ``limit`` rows of ``phase`` after key ``after``; answer the last key and how many."""
        add = self._outbox.add
        if phase == "contacts":
            found = await self._contacts.after(session, after, limit)
            for user_id, contact in found:
                await add(
                    session, CONTACT_CHANGED, self._contacts.event(user_id, contact), subject_id=user_id, actor=ACTOR
                )
            return (found[-1][0] if found else after), len(found)
        key, query, publish = _PHASES[phase]
        query = query.order_by(key).limit(limit)
        if after is not None:
            query = query.where(key > after)
        rows = [row._mapping for row in (await session.execute(query)).all()]
        for row in rows:
            subject, message, subject_id = publish(row)
            await add(session, subject, message, subject_id=subject_id, actor=ACTOR)
        return (rows[-1][key.name] if rows else after), len(rows)


_PHASES: dict[str, tuple[Any, Any, Callable[[Any], tuple[str, Any, str]]]] = {
    "branches": (
        branches.c.id,
        select(branches),
        lambda r: (events.branch_subject("announced"), events.branch_changed(r), r["id"]),
    ),
    "teams": (
        teams.c.id,
        select(teams),
        lambda r: (events.team_subject("announced"), events.team_changed(r), r["id"]),
    ),
    "users": (
        users.c.id,
        events.users_with_region(),
        lambda r: (events.user_subject("announced"), events.user_changed(r), r["id"]),
    ),
    "calendars": (
        calendars.c.branch_id,
        select(calendars),
        lambda r: (
            events.CALENDAR_ANNOUNCED,
            events.calendar_changed(r["branch_id"], r["spec"], r["version"]),
            events.calendar_subject_id(r["branch_id"]),
        ),
    ),
}


class WeeklyAnnouncement:
    """The scheduled item ``org-announce``: its handler (:meth:`run`) and its first scheduling (:meth:`ensure`)."""

    def __init__(self, announcer: Announcer, scheduler: Scheduler, period: dt.timedelta = PERIOD) -> None:
        self._announcer = announcer
        self._scheduler = scheduler
        self._period = period

    async def run(self, session: AsyncSession, item: ScheduledItem) -> None:
        """One batch of the announcement, then the next run: at once while there is more, else next week."""
        started = item.payload.get("started") or utcnow().isoformat()
        counts, cursor = await self._announcer.announce_batch(session, item.payload.get("cursor"))
        if cursor is not None:
            due, payload = utcnow(), {"started": started, "cursor": cursor}
        else:
            due, payload = dt.datetime.fromisoformat(started) + self._period, {}
            log.info("organisation announced", extra={"started": started, "next": due.isoformat()})
        log.debug("organisation announcement batch", extra={"counts": dict(counts)})
        await self._scheduler.schedule(session, kind=KIND, key=KEY, due_at=due, payload=payload)

    async def ensure(self, sessions: async_sessionmaker[AsyncSession]) -> bool:
        """Schedule the announcement for now unless it is pending already (the first start, or after it died);
        answer whether it was scheduled. Replicas starting together may both schedule it: only the newest
        version runs."""
        t = scheduled_items.c
        async with sessions() as session, session.begin():
            status = (await session.execute(select(t.status).where(t.key == KEY))).scalar()
            if status == PENDING:
                return False
            await self._scheduler.schedule(session, kind=KIND, key=KEY, due_at=utcnow(), payload={})
        return True
