"""The local copy of ``customer_id → owner, team, branch, region`` that services other than customer keep,
fed by customer events, so they apply data scope in their own queries without calling the customer service.
The same durable consumer re-points a service's records from a merged duplicate customer to its survivor.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, String, Table, delete, inspect, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from crm.customer.v1 import events_pb2 as customer_events
from crm_platform.auth_context import Identity
from crm_platform.errors import FailedPrecondition, NotFound
from crm_platform.inbox import Event, Handler, Subscription
from crm_platform.outbox import utcnow
from crm_platform.scope import scope_condition

directory_metadata = MetaData()

customer_directory = Table(
    "customer_directory",
    directory_metadata,
    Column("customer_id", String(36), primary_key=True),
    Column("owner_id", String(64), nullable=False, default="", index=True),
    Column("team_id", String(64), nullable=False, default="", index=True),
    Column("branch_id", String(64), nullable=False, default="", index=True),
    Column("region", String(64), nullable=False, default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Set when the customer was merged into another (the survivor's id): new records for it are refused.
    Column("merged_into", String(36), nullable=True),
)

CUSTOMER_CREATED = "crm.customer.customer.created"
CUSTOMER_ASSIGNED = "crm.customer.customer.assigned"
CUSTOMER_MERGED = "crm.customer.customer.merged"
CUSTOMER_ERASED = "crm.customer.customer.erased"


def create_directory_table(op: Any) -> None:
    """Create the directory table in a service's migration (``op`` is ``alembic.op``)."""
    directory_metadata.create_all(op.get_bind())


def add_directory_merged_into(op: Any) -> None:
    """Migration step: the ``merged_into`` column, for directories made before it existed (one made since by
    :func:`create_directory_table` has it already)."""
    if "merged_into" not in {c["name"] for c in inspect(op.get_bind()).get_columns("customer_directory")}:
        with op.batch_alter_table("customer_directory") as batch:
            batch.add_column(Column("merged_into", String(36), nullable=True))


def drop_directory_merged_into(op: Any) -> None:
    """Migration step back: the directory without ``merged_into``."""
    with op.batch_alter_table("customer_directory") as batch:
        batch.drop_column("merged_into")


async def upsert(
    session: AsyncSession,
    *,
    customer_id: str,
    owner_id: str,
    team_id: str,
    branch_id: str,
    region: str,
    as_of: dt.datetime | None = None,
) -> None:
    """Insert or replace one customer's ownership facts as of ``as_of`` (default: now).

    Facts older than the stored ones are ignored, so a late redelivery of ``created`` cannot undo an
    ``assigned`` that was handled before it.
    """
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    values = {
        "owner_id": owner_id,
        "team_id": team_id,
        "branch_id": branch_id,
        "region": region,
        "updated_at": as_of or utcnow(),
    }
    stmt = insert(customer_directory).values(customer_id=customer_id, **values)
    newer = customer_directory.c.updated_at <= stmt.excluded.updated_at
    await session.execute(stmt.on_conflict_do_update(index_elements=["customer_id"], set_=values, where=newer))


async def on_customer_created(session: AsyncSession, event: Event) -> None:
    """Record a new customer's owner, team, branch and region."""
    payload = event.payload
    assert isinstance(payload, customer_events.CustomerCreated)
    await upsert(
        session,
        customer_id=payload.customer_id,
        owner_id=payload.owner_id,
        team_id=payload.team_id,
        branch_id=payload.branch_id,
        region=payload.region,
        as_of=event.occurred_at,
    )


async def on_customer_assigned(session: AsyncSession, event: Event) -> None:
    """Follow a (re)assignment or a reclaim to the branch pool: the new owner, team, branch and region."""
    payload = event.payload
    assert isinstance(payload, customer_events.CustomerAssigned)
    await upsert(
        session,
        customer_id=payload.customer_id,
        owner_id=payload.owner_id,
        team_id=payload.team_id,
        branch_id=payload.branch_id,
        region=payload.region,
        as_of=event.occurred_at,
    )


async def on_customer_erased(session: AsyncSession, event: Event) -> None:
    """An erased customer (a lawful erasure, or a rolled-back import's customer that never should have existed)
    leaves the directory: nothing new can be attached to it here, and its records are no longer reachable
    through it. Applying it again changes nothing."""
    payload = event.payload
    assert isinstance(payload, customer_events.CustomerErased)
    await session.execute(delete(customer_directory).where(customer_directory.c.customer_id == payload.customer_id))


def repoint_on_merge(columns: Sequence[Column[str]]) -> Handler:
    """A ``customer.merged`` handler that moves a service's records from the duplicate to the survivor: every
    row whose ``column`` names the duplicate names the survivor afterwards (so it follows the survivor's owner
    in the directory). Applying it again changes nothing; the inbox makes a redelivery a no-op anyway."""

    async def on_customer_merged(session: AsyncSession, event: Event) -> None:
        payload = event.payload
        assert isinstance(payload, customer_events.CustomerMerged)
        if not payload.duplicate_id or not payload.survivor_id:
            return
        # The directory row first: on PostgreSQL that waits for every create still holding it (the FOR SHARE of
        # require_customer_in_scope) to commit, so the moves below — each statement a fresh snapshot under READ
        # COMMITTED — see their records; a create that comes later waits for this transaction and then finds
        # the customer merged. Moving the records first left a record committed in between on the duplicate.
        d = customer_directory.c
        await session.execute(
            update(customer_directory)
            .where(d.customer_id == payload.duplicate_id)
            .values(merged_into=payload.survivor_id)
        )
        for column in columns:
            await session.execute(
                update(column.table).where(column == payload.duplicate_id).values({column.name: payload.survivor_id})
            )

    return on_customer_merged


def directory_subscription(service: str, merged_records: Sequence[Column[str]] = ()) -> Subscription:
    """The durable consumer ``<service>-customer-directory`` that keeps the directory current, and re-points the
    ``merged_records`` columns (a service's ``customer_id`` columns) when a duplicate customer is merged (the
    directory then remembers where the duplicate went)."""
    handlers: dict[str, Handler] = {
        CUSTOMER_CREATED: on_customer_created,
        CUSTOMER_ASSIGNED: on_customer_assigned,
        CUSTOMER_ERASED: on_customer_erased,
    }
    handlers[CUSTOMER_MERGED] = repoint_on_merge(merged_records)
    return Subscription(
        durable=f"{service}-customer-directory",
        stream="CRM_CUSTOMER",
        subject="crm.customer.customer.>",
        handlers=handlers,
    )


async def require_customer_in_scope(
    session: AsyncSession, identity: Identity, customer_id: str, *, new_record: bool = False
) -> None:
    """Raise :class:`NotFound` unless the customer is known here and inside the caller's scope; with
    ``new_record``, :class:`FailedPrecondition` (``MERGED``, naming the survivor) for a customer merged into
    another, so nothing new lands on the retired file, and the customer's directory row stays share-locked until
    the caller's transaction ends (see :func:`repoint_on_merge`)."""
    c = customer_directory.c
    condition = scope_condition(identity, owner=c.owner_id, team=c.team_id, branch=c.branch_id, region=c.region)
    query = select(c.merged_into).where(c.customer_id == customer_id, condition)
    if new_record:
        # Held until the caller's transaction ends (PostgreSQL; SQLite runs one writer at a time): a merge of this
        # customer handled meanwhile waits for the new record to commit, then moves it with the others.
        query = query.with_for_update(read=True)
    found = (await session.execute(query)).first()
    if found is None:
        raise NotFound(f"customer {customer_id} not found")
    if new_record and found.merged_into:
        raise FailedPrecondition(
            f"customer {customer_id} was merged into {found.merged_into}; use that customer", reason="MERGED"
        )
