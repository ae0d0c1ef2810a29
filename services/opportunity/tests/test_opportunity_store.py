"""The opportunity store on SQLite and PostgreSQL: scope through the directory, idempotency, exact money, outbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from crm.common.v1 import envelope_pb2
from crm.customer.v1 import events_pb2 as customer_events
from crm_opportunity import subscriptions
from crm_opportunity.domain import open_opportunity
from crm_opportunity.store import OpportunityStore, opportunities
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

RM1 = identity("rm1")
RM2 = identity("rm2")
HEAD = identity("head", roles=("branch_head",), scope=Scope.BRANCH, team_id="")
OTHER_HEAD = identity(
    "head2", roles=("branch_head",), scope=Scope.BRANCH, branch_id="SH001", team_id="T3", region="east"
)


KEYS = CustomerKeys(Keyring.from_spec(DEV_MASTER_KEYS, "dev"))


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[OpportunityStore]:
    engine = create_engine(normalise_url(db_url))
    await migrate(engine, "crm_opportunity")
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        await upsert(session, customer_id="c1", owner_id="rm1", team_id="T1", branch_id="BJ001", region="north")
        await upsert(session, customer_id="c2", owner_id="rm2", team_id="T1", branch_id="BJ001", region="north")
    yield OpportunityStore(sessions, Outbox("opportunity"), CustomerDirectory())
    await engine.dispose()


async def test_create_get_scope_idempotency_and_outbox(store: OpportunityStore) -> None:
    now = utcnow()
    stored = await store.create(RM1, open_opportunity(RM1, "c1", "CD", "999999999999999.99", "CNY", now), "req-1")
    again = await store.create(RM1, open_opportunity(RM1, "c1", "CD", "1", "CNY", now), "req-1")
    assert again == stored
    # A request id is the caller's own key: another RM may use the same one.
    theirs = await store.create(RM2, open_opportunity(RM2, "c2", "Fund", "10.5", "USD", now), "req-1")
    assert theirs.id != stored.id

    got = await store.get(HEAD, stored.id)
    assert got == stored
    assert got.expected_amount == Decimal("999999999999999.99") and got.created_at.tzinfo is not None
    assert (await store.get(RM2, theirs.id)).expected_amount == Decimal("10.50")
    for outsider in (RM2, OTHER_HEAD):
        with pytest.raises(NotFound):
            await store.get(outsider, stored.id)
    with pytest.raises(NotFound):
        await store.create(RM2, open_opportunity(RM2, "c1", "CD", "1", "CNY", now), "")

    async with store._sessions() as session:
        rows = (await session.execute(select(outbox.c.subject))).scalars().all()
    assert rows == ["crm.opportunity.opportunity.created"] * 2


async def test_list_open_only_pages_and_scope(store: OpportunityStore) -> None:
    now = utcnow()
    ids = [(await store.create(RM1, open_opportunity(RM1, "c1", f"o{n}", "1", "CNY", now), "")).id for n in range(4)]
    async with store._sessions() as session, session.begin():
        await session.execute(update(opportunities).where(opportunities.c.id == ids[1]).values(stage="won"))
        await session.execute(update(opportunities).where(opportunities.c.id == ids[2]).values(stage="lost"))

    items, token = await store.list_for_customer(HEAD, "c1", open_only=False, limit=3, after_id="")
    assert [o.id for o in items] == [ids[3], ids[2], ids[1]] and token == ids[1]
    items, token = await store.list_for_customer(HEAD, "c1", open_only=False, limit=3, after_id=token)
    assert [o.id for o in items] == [ids[0]] and token == ""
    items, token = await store.list_for_customer(RM1, "c1", open_only=True, limit=50, after_id="")
    assert [o.id for o in items] == [ids[3], ids[0]] and token == ""
    for outsider in (RM2, OTHER_HEAD):
        with pytest.raises(NotFound):
            await store.list_for_customer(outsider, "c1", open_only=False, limit=50, after_id="")


async def test_a_merged_customers_opportunities_move_to_the_survivor(store: OpportunityStore) -> None:
    stored = await store.create(RM1, open_opportunity(RM1, "c1", "CD", "1", "CNY", utcnow()), "")
    # The directory consumer re-points them when the customer service announces the merge.
    handler = subscriptions.subscriptions(KEYS)[0].handlers["crm.customer.customer.merged"]
    payload = customer_events.CustomerMerged(survivor_id="c2", duplicate_id="c1", actor="head")
    event = Event(
        "e1", "crm.customer.customer.merged", "customer", "c2", "head", utcnow(), payload, envelope_pb2.EventEnvelope()
    )
    async with store._sessions() as session, session.begin():
        await handler(session, event)
    moved = await store.get(HEAD, stored.id)
    assert moved.customer_id == "c2"
    assert (await store.get(RM2, stored.id)).customer_id == "c2"  # it follows the survivor's owner now
    # The opportunity's owner stays a party to it (it is theirs until reassigned), whoever owns the customer.
    assert (await store.get(RM1, stored.id)).id == stored.id
    with pytest.raises(NotFound):
        await store.get(identity("rm3", team_id="T2"), stored.id)


async def test_a_request_id_binds_to_its_request_even_in_a_race(store: OpportunityStore) -> None:
    now = utcnow()
    stored = await store.create(RM1, open_opportunity(RM1, "c1", "CD", "1", "CNY", now), "req-f", "fp-a")
    again = await store.create(RM1, open_opportunity(RM1, "c1", "CD", "1", "CNY", now), "req-f", "fp-a")
    assert again == stored
    with pytest.raises(IdempotencyKeyReused):
        await store.create(RM1, open_opportunity(RM1, "c1", "Fund", "2", "CNY", now), "req-f", "fp-b")

    # Two calls with one key and different requests at once: one opportunity, the other call refused.
    racing = [open_opportunity(RM1, "c1", name, "1", "CNY", now) for name in ("A", "B")]
    results = await asyncio.gather(
        *(store.create(RM1, o, "req-race", f"fp-{o.name}") for o in racing), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["IdempotencyKeyReused", "Opportunity"], results
    async with store._sessions() as session:
        rows = (await session.execute(select(opportunities.c.id).where(opportunities.c.request_id == "req-race"))).all()
    assert len(rows) == 1
