"""The local copy of ``customer_id → owner, team, branch, region`` that services other than customer keep,
fed by customer events, so they apply data scope in their own queries without calling the customer service.
The same durable consumer re-points a service's records from a merged duplicate customer to its survivor.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, ColumnElement, DateTime, MetaData, String, Table, delete, inspect, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from crm.customer.v1 import events_pb2 as customer_events
from crm_platform.auth_context import Identity, current_identity
from crm_platform.clients.base import CallFailed
from crm_platform.errors import FailedPrecondition, NotFound, Unauthenticated, Unavailable
from crm_platform.inbox import Event, Handler, Subscription
from crm_platform.outbox import utcnow
from crm_platform.scope import in_scope, scope_condition

if TYPE_CHECKING:
    from crm_platform.clients import Clients
    from crm_platform.pii.keys import CustomerKeys, SealedText
    from crm_platform.policy import Policy

log = logging.getLogger(__name__)

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


async def on_customer_erased_shred(session: AsyncSession, event: Event) -> None:
    """:func:`on_customer_erased`, and the service's data key of the customer is destroyed (crypto-shredding of
    the personal texts it sealed: summaries, descriptions, names)."""
    from crm_platform.pii.keys import shred

    await on_customer_erased(session, event)
    payload = event.payload
    assert isinstance(payload, customer_events.CustomerErased)
    await shred(session, payload.customer_id)


def repoint_on_merge(
    columns: Sequence[Column[str]], sealed: Sequence[SealedText] = (), keys: CustomerKeys | None = None
) -> Handler:
    """A ``customer.merged`` handler that moves a service's records from the duplicate to the survivor: every
    row whose ``column`` names the duplicate names the survivor afterwards (so it follows the survivor's owner
    in the directory), and each ``sealed`` text is sealed again with the survivor's key. Applying it again changes
    nothing; the inbox makes a redelivery a no-op anyway."""

    async def on_customer_merged(session: AsyncSession, event: Event) -> None:
        payload = event.payload
        assert isinstance(payload, customer_events.CustomerMerged)
        if not payload.duplicate_id or not payload.survivor_id:
            return
        # The directory row first: on PostgreSQL that waits for every create still holding it (the FOR SHARE of
        # CustomerDirectory.require_in_scope) to commit, so the moves below — each statement a fresh snapshot under READ
        # COMMITTED — see their records; a create that comes later waits for this transaction and then finds
        # the customer merged. Moving the records first left a record committed in between on the duplicate.
        d = customer_directory.c
        await session.execute(
            update(customer_directory)
            .where(d.customer_id == payload.duplicate_id)
            .values(merged_into=payload.survivor_id)
        )
        for text in sealed:
            assert keys is not None, "sealed texts need the service's CustomerKeys"
            await _reseal(session, keys, text, payload.duplicate_id, payload.survivor_id)
        for column in columns:
            await session.execute(
                update(column.table).where(column == payload.duplicate_id).values({column.name: payload.survivor_id})
            )

    return on_customer_merged


async def _reseal(
    session: AsyncSession, keys: CustomerKeys, text: SealedText, duplicate_id: str, survivor_id: str
) -> None:
    rows = (
        await session.execute(
            select(text.record_id, text.sealed).where(text.customer_id == duplicate_id, text.sealed.is_not(None))
        )
    ).all()
    for record_id, blob in rows:
        plain = await keys.open(session, duplicate_id, text.field, blob)
        if plain is None:  # the duplicate's key is gone (erased): nothing readable to carry over
            continue
        resealed = await keys.seal(session, survivor_id, text.field, plain)
        await session.execute(
            update(text.sealed.table).where(text.record_id == record_id).values({text.sealed.name: resealed})
        )


def directory_subscription(
    service: str,
    merged_records: Sequence[Column[str]] = (),
    *,
    sealed: Sequence[SealedText] = (),
    keys: CustomerKeys | None = None,
) -> Subscription:
    """The durable consumer ``<service>-customer-directory`` that keeps the directory current, and re-points the
    ``merged_records`` columns (a service's ``customer_id`` columns) when a duplicate customer is merged (the
    directory then remembers where the duplicate went) and seals their ``sealed`` texts again with the survivor's
    key; with ``keys`` (a service that seals personal texts), an erasure also shreds the service's data key of the
    customer (:mod:`crm_platform.pii.keys`)."""
    handlers: dict[str, Handler] = {
        CUSTOMER_CREATED: on_customer_created,
        CUSTOMER_ASSIGNED: on_customer_assigned,
        CUSTOMER_ERASED: on_customer_erased_shred if keys is not None else on_customer_erased,
    }
    handlers[CUSTOMER_MERGED] = repoint_on_merge(merged_records, sealed, keys)
    return Subscription(
        durable=f"{service}-customer-directory",
        stream="CRM_CUSTOMER",
        subject="crm.customer.customer.>",
        handlers=handlers,
    )


Lookup = Callable[[str], Awaitable["DirectoryEntry | None"]]


@dataclass(frozen=True)
class DirectoryEntry:
    """One customer's ownership facts, as the customer service answers a lookup."""

    customer_id: str
    owner_id: str
    team_id: str
    branch_id: str
    region: str
    merged_into: str
    as_of: dt.datetime


def customer_lookup(clients: Clients, policy: Policy, service: str) -> Lookup:
    """A :data:`Lookup` asking the customer service as ``svc:<service>`` (``customer:lookup``), on behalf of the
    caller whose request needed it."""
    from crm.customer.v1 import customer_service_pb2

    async def lookup(customer_id: str) -> DirectoryEntry | None:
        on_behalf_of = ""
        with contextlib.suppress(Unauthenticated):
            on_behalf_of = current_identity().user_id
        caller = policy.service_identity(service, on_behalf_of=on_behalf_of)
        reply = await clients.customer.lookup_customers(
            caller, customer_service_pb2.LookupCustomersRequest(customer_ids=[customer_id])
        )
        for e in reply.entries:
            if e.customer_id == customer_id:
                return DirectoryEntry(
                    e.customer_id,
                    e.owner_id,
                    e.team_id,
                    e.branch_id,
                    e.region,
                    e.merged_into,
                    e.as_of.ToDatetime(tzinfo=dt.UTC),
                )
        return None

    return lookup


class CustomerDirectory:
    """The service's local directory of customers, for scope checks: a customer not known here yet (created a
    moment ago, its event still on the way) is asked of the customer service and written here at once, so
    "create a customer, then log a call on it" never fails; without a ``lookup`` (tests, tools) it is not found.
    """

    def __init__(self, lookup: Lookup | None = None) -> None:
        self._lookup = lookup

    async def require_in_scope(
        self,
        session: AsyncSession,
        identity: Identity,
        customer_id: str,
        *,
        new_record: bool = False,
        permission: str = "",
    ) -> None:
        """Raise :class:`NotFound` unless the customer is known (here, or to the customer service) and inside the
        caller's scope — the scope of ``permission`` when given, else the scope the call acts under; with
        ``new_record``, :class:`FailedPrecondition` (``MERGED``, naming the survivor) for a customer merged into
        another, so nothing new lands on the retired file, and the customer's directory row stays share-locked
        until the caller's transaction ends (see :func:`repoint_on_merge`)."""
        found = await self._row(session, customer_id, new_record)
        if found is None and self._lookup is not None:
            try:
                entry = await self._lookup(customer_id)
            except CallFailed as exc:
                log.warning("customer lookup failed", extra={"code": exc.code.name})
                raise Unavailable("the customer service could not be asked about this customer") from None
            if entry is not None:
                await self.remember(session, entry)
                found = await self._row(session, customer_id, new_record)
        acting = identity.acting_as(permission) if permission else identity
        if found is None or not in_scope(
            acting, owner=found.owner_id, team=found.team_id, branch=found.branch_id, region=found.region
        ):
            raise NotFound(f"customer {customer_id} not found")
        if new_record and found.merged_into:
            raise FailedPrecondition(
                f"customer {customer_id} was merged into {found.merged_into}; use that customer", reason="MERGED"
            )

    @staticmethod
    async def remember(session: AsyncSession, entry: DirectoryEntry) -> None:
        """Write a looked-up customer into the directory (facts older than the stored ones change nothing)."""
        await upsert(
            session,
            customer_id=entry.customer_id,
            owner_id=entry.owner_id,
            team_id=entry.team_id,
            branch_id=entry.branch_id,
            region=entry.region,
            as_of=entry.as_of,
        )
        if entry.merged_into:
            await session.execute(
                update(customer_directory)
                .where(customer_directory.c.customer_id == entry.customer_id)
                .values(merged_into=entry.merged_into)
            )

    @staticmethod
    async def _row(session: AsyncSession, customer_id: str, new_record: bool) -> Any:
        c = customer_directory.c
        query = select(c.owner_id, c.team_id, c.branch_id, c.region, c.merged_into).where(c.customer_id == customer_id)
        if new_record:
            # Held until the caller's transaction ends (PostgreSQL; SQLite runs one writer at a time): a merge of
            # this customer handled meanwhile waits for the new record to commit, then moves it with the others.
            query = query.with_for_update(read=True)
        return (await session.execute(query)).first()


def visible_condition(
    identity: Identity, customer_id: ColumnElement[str], parties: Sequence[ColumnElement[str]] = ()
) -> ColumnElement[bool]:
    """The WHERE condition of "a record the caller may see": the caller is a party to it (one of ``parties``:
    author, assignee, handler, referrer, approver — whatever the customer's owner) OR its customer is inside the
    caller's scope (through the directory). ``identity`` acts under the permission of the call."""
    d = customer_directory.c
    in_scope_customers = select(d.customer_id).where(
        scope_condition(identity, owner=d.owner_id, team=d.team_id, branch=d.branch_id, region=d.region)
    )
    conditions: list[ColumnElement[bool]] = [customer_id.in_(in_scope_customers)]
    if identity.user_id:
        conditions.extend(party == identity.user_id for party in parties)
    return or_(*conditions)
