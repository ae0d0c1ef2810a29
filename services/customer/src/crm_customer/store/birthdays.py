"""Birthdays for other services (greetings, birthday alerts): a branch's customers whose birthday falls in a
window, month and day only, every read kept in the data-access log."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import extract, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_customer.domain.birthdays import birthday_in_window, month_days
from crm_customer.store.tables import customers, data_access_log
from crm_platform.auth_context import Identity
from crm_platform.ids import new_id


@dataclass(frozen=True)
class BirthdayEntry:
    """One customer's birthday inside the window."""

    customer_id: str
    owner_id: str
    team_id: str
    on: dt.date
    tier: str
    do_not_disturb: bool


class BirthdayQueries:
    """Reads birthdays and logs each read in the same transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def list_birthdays(
        self, caller: Identity, branch_id: str, start: dt.date, end: dt.date, now: dt.datetime
    ) -> list[BirthdayEntry]:
        """Every live customer of ``branch_id`` with a birthday in ``[start, end]``, by date then customer id."""
        c = customers.c
        keys = [m * 100 + d for m, d in month_days(start, end)]
        query = select(c.id, c.owner_id, c.team_id, c.birth_date, c.tier, c.do_not_disturb).where(
            c.branch_id == branch_id,
            c.erased_at.is_(None),
            c.merged_into.is_(None),
            c.birth_date.is_not(None),
            (extract("month", c.birth_date) * 100 + extract("day", c.birth_date)).in_(keys),
        )
        async with self._sessions() as session, session.begin():
            rows = (await session.execute(query)).all()
            found = []
            for r in rows:
                on = birthday_in_window(r.birth_date, start, end)
                if on is not None:
                    found.append(BirthdayEntry(r.id, r.owner_id, r.team_id or "", on, r.tier, bool(r.do_not_disturb)))
            found.sort(key=lambda e: (e.on, e.customer_id))
            await session.execute(
                insert(data_access_log).values(
                    id=new_id(),
                    occurred_at=now,
                    caller=caller.user_id,
                    on_behalf_of=caller.on_behalf_of,
                    request_id=caller.request_id,
                    purpose="ListBirthdays",
                    detail=f"branch {branch_id}, {start.isoformat()}..{end.isoformat()}",
                    answered=len(found),
                )
            )
        return found
