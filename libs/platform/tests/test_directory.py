"""The customer directory other services keep: it follows creations and (re)assignments, in any delivery
order, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Column, MetaData, String, Table, insert, select
from sqlalchemy import inspect as sa_inspect

from crm.common.v1 import envelope_pb2
from crm.customer.v1 import events_pb2
from crm_platform.auth_context import Scope
from crm_platform.db import create_engine, normalise_url, session_factory
from crm_platform.directory import (
    CustomerDirectory,
    add_directory_merged_into,
    customer_directory,
    directory_metadata,
    directory_subscription,
)
from crm_platform.errors import FailedPrecondition, NotFound
from crm_platform.inbox import Event
from crm_testing.services import identity

T0 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)


def _event(subject: str, payload: object, at: dt.datetime) -> Event:
    return Event(
        id=f"e-{subject}-{at.timestamp()}",
        type=subject,
        source="customer",
        subject_id="c1",
        actor="head",
        occurred_at=at,
        payload=payload,  # type: ignore[arg-type]
        envelope=envelope_pb2.EventEnvelope(),
    )


async def test_directory_follows_assignments_in_any_order(db_url: str) -> None:
    engine = create_engine(normalise_url(db_url))
    async with engine.begin() as conn:
        await conn.run_sync(directory_metadata.create_all)
    sessions = session_factory(engine)
    handlers = directory_subscription("test").handlers
    created = _event(
        "crm.customer.customer.created",
        events_pb2.CustomerCreated(customer_id="c1", owner_id="rm1", team_id="T1", branch_id="BJ001", region="north"),
        T0,
    )
    assigned = _event(
        "crm.customer.customer.assigned",
        events_pb2.CustomerAssigned(customer_id="c1", owner_id="rm3", team_id="T2", branch_id="BJ001", region="north"),
        T0 + dt.timedelta(seconds=5),
    )
    reclaimed = _event(
        "crm.customer.customer.assigned",
        events_pb2.CustomerAssigned(customer_id="c1", owner_id="", team_id="", branch_id="BJ001", region="north"),
        T0 + dt.timedelta(seconds=9),
    )
    rm1, rm3 = identity("rm1"), identity("rm3", team_id="T2")
    head = identity("head", roles=("branch_head",), scope=Scope.BRANCH, team_id="")
    try:

        async def owner() -> tuple[str, str]:
            async with sessions() as session:
                row = (await session.execute(customer_directory.select())).one()
            return row.owner_id, row.team_id

        for event in (created, assigned):
            async with sessions() as session, session.begin():
                await handlers[event.type](session, event)
        assert await owner() == ("rm3", "T2")
        async with sessions() as session:
            await CustomerDirectory().require_in_scope(session, rm3, "c1")
            with pytest.raises(NotFound):
                await CustomerDirectory().require_in_scope(session, rm1, "c1")

        # A late redelivery of the older ``created`` changes nothing; the newer reclaim applies.
        for event in (created, reclaimed, assigned):
            async with sessions() as session, session.begin():
                await handlers[event.type](session, event)
        assert await owner() == ("", "")
        async with sessions() as session:
            await CustomerDirectory().require_in_scope(session, head, "c1")
    finally:
        await engine.dispose()


async def _directory_and_records(url: str, table: str) -> tuple[Any, Table]:
    """An engine on ``url`` with the directory and a service's table of records naming a customer."""
    records = Table(
        table,
        MetaData(),
        Column("id", String(36), primary_key=True),
        Column("customer_id", String(36), nullable=False),
    )
    engine = create_engine(normalise_url(url))
    async with engine.begin() as conn:
        await conn.run_sync(directory_metadata.create_all)
        await conn.run_sync(records.metadata.create_all)
    return engine, records


async def test_a_merged_customers_records_move_to_the_survivor(db_url: str) -> None:
    engine, records = await _directory_and_records(db_url, "records")
    sessions = session_factory(engine)
    try:
        async with sessions() as session, session.begin():
            await session.execute(
                insert(records), [{"id": "r1", "customer_id": "dup"}, {"id": "r2", "customer_id": "other"}]
            )
        handlers = directory_subscription("test", merged_records=(records.c.customer_id,)).handlers
        created = _event(
            "crm.customer.customer.created",
            events_pb2.CustomerCreated(customer_id="dup", owner_id="rm1", team_id="T1", branch_id="BJ001"),
            T0,
        )
        async with sessions() as session, session.begin():
            await handlers[created.type](session, created)
        merged = _event(
            "crm.customer.customer.merged",
            events_pb2.CustomerMerged(survivor_id="kept", duplicate_id="dup", filled_fields=["mobile"], actor="head"),
            T0,
        )
        for _ in range(2):  # applying it again changes nothing
            async with sessions() as session, session.begin():
                await handlers[merged.type](session, merged)
            async with sessions() as session:
                rows = dict((await session.execute(select(records.c.id, records.c.customer_id))).all())
            assert rows == {"r1": "kept", "r2": "other"}
        # The directory remembers where the duplicate went: nothing new lands on it, reads still pass.
        async with sessions() as session:
            with pytest.raises(FailedPrecondition) as refused:
                await CustomerDirectory().require_in_scope(session, identity("rm1"), "dup", new_record=True)
            assert refused.value.reason == "MERGED" and "kept" in str(refused.value)
            await CustomerDirectory().require_in_scope(session, identity("rm1"), "dup")
    finally:
        await engine.dispose()


async def test_the_merged_into_migration_step_adds_the_column_once(db_url: str) -> None:
    """A directory made before ``merged_into`` existed gets it; one made since is left as it is."""
    old_metadata = MetaData()
    Table("customer_directory", old_metadata, Column("customer_id", String(36), primary_key=True))
    engine = create_engine(normalise_url(db_url))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(old_metadata.create_all)

            def step(sync_conn: Any) -> list[str]:
                operations = Operations(MigrationContext.configure(sync_conn))
                add_directory_merged_into(operations)
                add_directory_merged_into(operations)  # a directory that has it already is left alone
                return [c["name"] for c in sa_inspect(sync_conn).get_columns("customer_directory")]

            assert await conn.run_sync(step) == ["customer_id", "merged_into"]
            await conn.run_sync(old_metadata.drop_all)
    finally:
        await engine.dispose()


async def test_an_erased_customer_leaves_the_directory(db_url: str) -> None:
    engine = create_engine(normalise_url(db_url))
    async with engine.begin() as conn:
        await conn.run_sync(directory_metadata.create_all)
    sessions = session_factory(engine)
    handlers = directory_subscription("test").handlers
    rm1 = identity("rm1")
    try:
        for customer_id in ("c1", "c2"):
            created = _event(
                "crm.customer.customer.created",
                events_pb2.CustomerCreated(customer_id=customer_id, owner_id="rm1", team_id="T1", branch_id="BJ001"),
                T0,
            )
            async with sessions() as session, session.begin():
                await handlers[created.type](session, created)
        erased = _event("crm.customer.customer.erased", events_pb2.CustomerErased(customer_id="c1"), T0)
        for _ in range(2):  # a second delivery changes nothing
            async with sessions() as session, session.begin():
                await handlers[erased.type](session, erased)
        async with sessions() as session:
            with pytest.raises(NotFound):
                await CustomerDirectory().require_in_scope(session, rm1, "c1")
            await CustomerDirectory().require_in_scope(session, rm1, "c2")  # only the erased one left
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_a_record_created_while_the_merge_is_handled_follows_the_survivor(postgres_url: str) -> None:
    """The race of a new record and the merge: the record's transaction has checked the directory (the customer
    not merged yet) and not yet committed when the merge is handled. The merge waits for it and moves it too."""
    import asyncio

    engine, records = await _directory_and_records(postgres_url, "race_records")
    sessions = session_factory(engine)
    handlers = directory_subscription("race", merged_records=(records.c.customer_id,)).handlers
    created = _event(
        "crm.customer.customer.created",
        events_pb2.CustomerCreated(customer_id="dup2", owner_id="rm1", team_id="T1", branch_id="BJ001"),
        T0,
    )
    merged = _event(
        "crm.customer.customer.merged",
        events_pb2.CustomerMerged(survivor_id="kept2", duplicate_id="dup2", actor="head"),
        T0,
    )
    try:
        async with sessions() as session, session.begin():
            await handlers[created.type](session, created)
        checked, merging = asyncio.Event(), asyncio.Event()

        async def new_record() -> None:
            async with sessions() as session, session.begin():
                await CustomerDirectory().require_in_scope(session, identity("rm1"), "dup2", new_record=True)
                checked.set()
                await merging.wait()
                await asyncio.sleep(0.3)  # the merge handler is now running, and must be waiting for us
                await session.execute(insert(records).values(id="late", customer_id="dup2"))

        async def merge() -> None:
            await checked.wait()
            async with sessions() as session, session.begin():
                merging.set()
                await handlers[merged.type](session, merged)

        await asyncio.wait_for(asyncio.gather(new_record(), merge()), timeout=10)
        async with sessions() as session:
            rows = dict((await session.execute(select(records.c.id, records.c.customer_id))).all())
        assert rows == {"late": "kept2"}
        # Once the merge has committed, the next record is refused instead.
        async with sessions() as session, session.begin():
            with pytest.raises(FailedPrecondition):
                await CustomerDirectory().require_in_scope(session, identity("rm1"), "dup2", new_record=True)
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(records.metadata.drop_all)
        await engine.dispose()
