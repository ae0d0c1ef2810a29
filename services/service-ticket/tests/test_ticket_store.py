"""The ticket store on SQLite and PostgreSQL: scope through the directory, idempotency, deadlines, outbox."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, update

from crm.common.v1 import envelope_pb2
from crm.customer.v1 import events_pb2 as customer_events
from crm_platform.auth_context import Scope
from crm_platform.config import DEV_MASTER_KEYS
from crm_platform.db import create_engine, normalise_url, session_factory
from crm_platform.directory import CustomerDirectory, upsert
from crm_platform.errors import NotFound
from crm_platform.idempotency import IdempotencyKeyReused
from crm_platform.inbox import Event
from crm_platform.migrations import migrate
from crm_platform.outbox import Outbox, utcnow
from crm_platform.pii import Keyring
from crm_platform.pii.keys import CustomerKeys
from crm_platform.schema import outbox
from crm_testing.services import identity
from crm_ticket import subscriptions
from crm_ticket.domain import open_ticket
from crm_ticket.store import TicketStore, tickets

RM1 = identity("rm1")
RM2 = identity("rm2")
HEAD = identity("head", roles=("branch_head",), scope=Scope.BRANCH, team_id="")
OTHER_HEAD = identity(
    "head2", roles=("branch_head",), scope=Scope.BRANCH, branch_id="SH001", team_id="T3", region="east"
)


KEYS = CustomerKeys(Keyring.from_spec(DEV_MASTER_KEYS, "dev"))


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[TicketStore]:
    engine = create_engine(normalise_url(db_url))
    await migrate(engine, "crm_ticket")
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        await upsert(session, customer_id="c1", owner_id="rm1", team_id="T1", branch_id="BJ001", region="north")
    yield TicketStore(sessions, Outbox("ticket"), CustomerDirectory(), KEYS)
    await engine.dispose()


async def test_open_get_scope_idempotency_and_outbox(store: TicketStore) -> None:
    now = utcnow()
    stored = await store.open(RM1, open_ticket(RM1, "c1", "complaint", "high", "卡被吞了", now), "req-1")
    again = await store.open(RM1, open_ticket(RM1, "c1", "enquiry", "low", "other", now), "req-1")
    assert again == stored

    got = await store.get(HEAD, stored.id)
    assert got == stored
    assert got.sla_deadline == now + dt.timedelta(hours=4) and got.sla_deadline.tzinfo is not None
    for outsider in (RM2, OTHER_HEAD):
        with pytest.raises(NotFound):
            await store.get(outsider, stored.id)
    with pytest.raises(NotFound):
        await store.open(RM2, open_ticket(RM2, "c1", "complaint", "high", "d", now), "")

    async with store._sessions() as session:
        rows = (await session.execute(select(outbox.c.subject, outbox.c.id))).all()
    assert [r.subject for r in rows] == ["crm.ticket.ticket.opened"]


async def test_list_open_only_pages_and_scope(store: TicketStore) -> None:
    now = utcnow()
    ids = [(await store.open(RM1, open_ticket(RM1, "c1", "enquiry", "low", f"d{n}", now), "")).id for n in range(3)]
    async with store._sessions() as session, session.begin():
        await session.execute(update(tickets).where(tickets.c.id == ids[1]).values(status="closed"))

    items, token = await store.list_for_customer(HEAD, "c1", open_only=False, limit=2, after_id="")
    assert [t.id for t in items] == [ids[2], ids[1]] and token == ids[1]
    items, token = await store.list_for_customer(HEAD, "c1", open_only=False, limit=2, after_id=token)
    assert [t.id for t in items] == [ids[0]] and token == ""
    items, token = await store.list_for_customer(RM1, "c1", open_only=True, limit=50, after_id="")
    assert [t.id for t in items] == [ids[2], ids[0]] and token == ""
    for outsider in (RM2, OTHER_HEAD):
        with pytest.raises(NotFound):
            await store.list_for_customer(outsider, "c1", open_only=False, limit=50, after_id="")


async def test_a_merged_customers_tickets_move_to_the_survivor(store: TicketStore) -> None:
    async with store._sessions() as session, session.begin():
        await upsert(session, customer_id="c9", owner_id="rm2", team_id="T1", branch_id="BJ001", region="north")
    stored = await store.open(RM1, open_ticket(RM1, "c1", "complaint", "high", "卡被吞了", utcnow()), "")
    # The directory consumer re-points them when the customer service announces the merge.
    handler = subscriptions.subscriptions(KEYS)[0].handlers["crm.customer.customer.merged"]
    payload = customer_events.CustomerMerged(survivor_id="c9", duplicate_id="c1", actor="head")
    event = Event(
        "e1", "crm.customer.customer.merged", "customer", "c9", "head", utcnow(), payload, envelope_pb2.EventEnvelope()
    )
    async with store._sessions() as session, session.begin():
        await handler(session, event)
    assert (await store.get(RM2, stored.id)).customer_id == "c9"  # it follows the survivor's owner now
    assert (await store.get(RM1, stored.id)).description == "卡被吞了"  # the opener stays a party; resealed text
    with pytest.raises(NotFound):
        await store.get(identity("rm3", team_id="T2"), stored.id)


async def test_a_handler_sees_a_ticket_routed_to_them_outside_their_scope(store: TicketStore) -> None:
    # A back-office handler owns no customer: by scope alone they would see no ticket at all.
    handler = identity("bo1", roles=("back_office",), scope=Scope.OWN, team_id="", permissions=("ticket:read",))
    other = identity("bo2", roles=("back_office",), scope=Scope.OWN, team_id="", permissions=("ticket:read",))
    routed = await store.open(
        RM1, open_ticket(RM1, "c1", "service_request", "normal", "挂失补卡", utcnow(), handler_id="bo1"), ""
    )
    seen = await store.get(handler, routed.id)
    assert (seen.handler_id, seen.description) == ("bo1", "挂失补卡")
    with pytest.raises(NotFound):
        await store.get(other, routed.id)
    # Listing by customer still needs the customer in scope: a party sees the record, not the customer's file.
    with pytest.raises(NotFound):
        await store.list_for_customer(handler, "c1", open_only=False, limit=50, after_id="")


async def test_a_request_id_binds_to_its_request_even_in_a_race(store: TicketStore) -> None:
    now = utcnow()
    stored = await store.open(RM1, open_ticket(RM1, "c1", "complaint", "high", "卡被吞了", now), "req-f", "fp-a")
    again = await store.open(RM1, open_ticket(RM1, "c1", "complaint", "high", "卡被吞了", now), "req-f", "fp-a")
    assert again == stored
    with pytest.raises(IdempotencyKeyReused):
        await store.open(RM1, open_ticket(RM1, "c1", "enquiry", "low", "other", now), "req-f", "fp-b")

    # Two calls with one key and different requests at once: one ticket, the other call refused.
    racing = [open_ticket(RM1, "c1", "complaint", "high", text, now) for text in ("A", "B")]
    results = await asyncio.gather(
        *(store.open(RM1, t, "req-race", f"fp-{t.description}") for t in racing), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["IdempotencyKeyReused", "Ticket"], results
    async with store._sessions() as session:
        rows = (await session.execute(select(tickets.c.id).where(tickets.c.request_id == "req-race"))).all()
    assert len(rows) == 1
