"""Business calendars as organisation data: the bank-wide default and each branch's own.

A branch without a calendar of its own inherits the bank-wide default; without a stored default, the built-in
mainland one (:func:`crm_platform.calendar.default_calendar_dict`) is in force, as version 0. Every change is
validated by :meth:`Calendar.from_dict` (a bad value is named by its path, ``weekly.mon[1]``), guarded by the
version the caller read (optimistic concurrency), and commits with a ``crm.identity.calendar.updated`` event,
from which every service keeps its copy (:mod:`crm_platform.org`). The JSON is stored and served as written.

Removing a branch's calendar keeps its row without a spec, so the version keeps counting up: the services order
a branch's calendar changes by version, and a removal must outrank the calendar it removes.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_gateway import events
from crm_gateway.identity import branches, calendars
from crm_platform.auth_context import Identity
from crm_platform.calendar import Calendar, CalendarError, default_calendar_dict
from crm_platform.errors import Conflict, FieldViolation, InvalidArgument, NotFound
from crm_platform.outbox import Outbox, utcnow

BANK_DEFAULT = ""  # the branch_id of the bank-wide default

# Where the calendar answered comes from.
BUILT_IN, BANK, BRANCH = "built_in", "bank_default", "branch"


def validated(spec: Any) -> dict[str, Any]:
    """``spec`` when it is a valid calendar; else :class:`InvalidArgument` naming the field path."""
    try:
        Calendar.from_dict(spec)
    except CalendarError as error:
        raise InvalidArgument([FieldViolation(error.field, error.reason)], "the calendar is not valid") from None
    return dict(spec)


class BusinessCalendars:
    """Reads and changes the ``calendars`` table.

    Answers are dicts: ``branch_id``, ``calendar`` (the JSON shape), ``version`` (of this resource, what
    ``If-Match`` takes: for a branch that inherits, its own, 0 when it never had one), ``source`` (``branch``,
    ``bank_default`` or ``built_in``), ``inherited``, and ``updated_by`` / ``updated_at`` of the calendar shown.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox) -> None:
        self._sessions = sessions
        self._outbox = outbox

    async def bank_default(self) -> dict[str, Any]:
        """The bank-wide default: the stored one, else the built-in one (version 0)."""
        async with self._sessions() as session:
            rows = await _rows(session, BANK_DEFAULT)
        return _answer(BANK_DEFAULT, rows)

    async def of_branch(self, branch_id: str) -> dict[str, Any]:
        """The calendar in force at ``branch_id``: its own, else the inherited default."""
        async with self._sessions() as session:
            await _require_branch(session, branch_id)
            rows = await _rows(session, branch_id)
        return _answer(branch_id, rows)

    async def replace(self, actor: Identity, branch_id: str, spec: Any, expected_version: int) -> dict[str, Any]:
        """Store ``spec`` as the calendar of ``branch_id`` (``""``: the bank-wide default) if its version is still
        ``expected_version``; else :class:`Conflict`."""
        text = json.dumps(validated(spec), ensure_ascii=False)
        async with self._sessions() as session, session.begin():
            if branch_id != BANK_DEFAULT:
                await _require_branch(session, branch_id)
            version = await self._write(session, actor, branch_id, text, expected_version)
            await self._outbox.add(
                session,
                events.CALENDAR_UPDATED,
                events.calendar_changed(branch_id, text, version),
                subject_id=events.calendar_subject_id(branch_id),
                actor=actor.user_id,
            )
        return await (self.bank_default() if branch_id == BANK_DEFAULT else self.of_branch(branch_id))

    async def remove(self, actor: Identity, branch_id: str, expected_version: int | None) -> dict[str, Any]:
        """Remove the branch's own calendar (it inherits the default again); :class:`NotFound` when it has none,
        :class:`Conflict` when ``expected_version`` is given and stale."""
        async with self._sessions() as session, session.begin():
            await _require_branch(session, branch_id)
            c = calendars.c
            row = (await session.execute(select(c.spec, c.version).where(c.branch_id == branch_id))).first()
            if row is None or row.spec is None:
                raise NotFound(f"branch {branch_id} has no calendar of its own")
            version = await self._write(
                session, actor, branch_id, None, row.version if expected_version is None else expected_version
            )
            await self._outbox.add(
                session,
                events.CALENDAR_UPDATED,
                events.calendar_changed(branch_id, None, version),
                subject_id=events.calendar_subject_id(branch_id),
                actor=actor.user_id,
            )
        return await self.of_branch(branch_id)

    @staticmethod
    async def _write(
        session: AsyncSession, actor: Identity, branch_id: str, spec: str | None, expected_version: int
    ) -> int:
        """Write version ``expected_version + 1``, or raise :class:`Conflict` when the stored one differs."""
        c = calendars.c
        values = {"spec": spec, "version": expected_version + 1, "updated_by": actor.user_id, "updated_at": utcnow()}
        if expected_version == 0:
            try:
                async with session.begin_nested():
                    await session.execute(insert(calendars).values(branch_id=branch_id, **values))
            except IntegrityError:
                raise _stale(branch_id) from None
        else:
            changed = await session.execute(
                update(calendars).where(c.branch_id == branch_id, c.version == expected_version).values(**values)
            )
            if not changed.rowcount:  # type: ignore[attr-defined]
                raise _stale(branch_id)
        return expected_version + 1


def _stale(branch_id: str) -> Conflict:
    return Conflict(f"the calendar of {events.calendar_subject_id(branch_id)} changed since it was read")


async def _require_branch(session: AsyncSession, branch_id: str) -> None:
    if (await session.execute(select(branches.c.id).where(branches.c.id == branch_id))).first() is None:
        raise NotFound(f"branch {branch_id} not found")


async def _rows(session: AsyncSession, branch_id: str) -> dict[str, Any]:
    """The stored rows of ``branch_id`` and of the default, by branch id."""
    c = calendars.c
    query = select(calendars).where(c.branch_id.in_(sorted({branch_id, BANK_DEFAULT})))
    return {row.branch_id: row._mapping for row in (await session.execute(query)).all()}


def _answer(branch_id: str, rows: dict[str, Any]) -> dict[str, Any]:
    own = rows.get(branch_id)
    version = own["version"] if own is not None else 0
    if own is not None and own["spec"] is not None:
        shown, source = own, (BANK if branch_id == BANK_DEFAULT else BRANCH)
    elif branch_id != BANK_DEFAULT and (default := rows.get(BANK_DEFAULT)) is not None:
        shown, source = default, BANK
    else:
        shown, source = None, BUILT_IN
    return {
        "branch_id": branch_id,
        "calendar": json.loads(shown["spec"]) if shown is not None else default_calendar_dict(),
        "version": version,
        "source": source,
        "inherited": branch_id != BANK_DEFAULT and source != BRANCH,
        "updated_by": shown["updated_by"] if shown is not None else None,
        "updated_at": shown["updated_at"] if shown is not None else None,
    }
