"""Last contact: the customer service learns of contacts from the interaction service's events and keeps the
latest one on the customer, so "last contact before" is a plain indexed condition of lists and segments."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_customer.store.tables import customers


async def record_contact(session: AsyncSession, customer_id: str, at: dt.datetime) -> bool:
    """Move the customer's last contact forward to ``at`` (never back: events may arrive out of order).

    Not a change of the customer file: no version, history or event. False when the customer is unknown here
    or already has a later contact.
    """
    c = customers.c
    result = await session.execute(
        update(customers)
        .where(c.id == customer_id, or_(c.last_contact_at.is_(None), c.last_contact_at < at))
        .values(last_contact_at=at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
