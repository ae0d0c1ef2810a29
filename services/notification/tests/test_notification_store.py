"""The inbox store on SQLite and PostgreSQL: own inbox only, newest first, paging, unread only, outbox."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, update

from crm_notification.domain import InboxPage, customer_assigned
from crm_notification.store import InboxStore, inbox_messages
from crm_platform.db import create_engine, normalise_url, session_factory
from crm_platform.migrations import migrate
from crm_platform.outbox import Outbox, utcnow
from crm_platform.schema import outbox


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[InboxStore]:
    engine = create_engine(normalise_url(db_url))
    await migrate(engine, "crm_notification")
    yield InboxStore(session_factory(engine), Outbox("notification"))
    await engine.dispose()


async def test_paging_newest_first_unread_only_and_outbox(store: InboxStore) -> None:
    delivered = []
    async with store._sessions() as session, session.begin():
        for n in range(5):
            message = customer_assigned(f"c{n}", "rm1", utcnow())
            assert message is not None
            await store.deliver(session, message, actor="rm1")
            delivered.append(message.id)
        other = customer_assigned("c9", "rm2", utcnow())
        assert other is not None
        await store.deliver(session, other, actor="rm2")

    seen, token, pages = [], "", 0
    while True:
        items, token = await store.page(InboxPage("rm1", 2, token, False))
        seen.extend(m.id for m in items)
        pages += 1
        if not token:
            break
    assert seen == list(reversed(delivered)) and pages == 3

    async with store._sessions() as session, session.begin():
        await session.execute(
            update(inbox_messages).where(inbox_messages.c.id == delivered[4]).values(read_at=utcnow())
        )
    unread, _ = await store.page(InboxPage("rm1", 50, "", True))
    assert [m.id for m in unread] == list(reversed(delivered[:4]))
    everything, _ = await store.page(InboxPage("rm1", 50, "", False))
    assert everything[0].read and everything[0].read_at is not None and not everything[1].read

    async with store._sessions() as session:
        subjects = (await session.execute(select(outbox.c.subject))).scalars().all()
    assert subjects == ["crm.notification.inbox.created"] * 6
