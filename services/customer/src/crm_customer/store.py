"""Customer tables and queries. Every read applies the caller's data scope in SQL."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, insert, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm.customer.v1 import events_pb2
from crm_customer.domain import Customer, CustomerKind, Profile
from crm_customer.events import CUSTOMER_CREATED, customer_created
from crm_platform.auth_context import Identity
from crm_platform.errors import NotFound
from crm_platform.outbox import Outbox
from crm_platform.scope import scope_condition

metadata = MetaData()

customers = Table(
    "customers",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("customer_no", String(20), nullable=False, unique=True),
    Column("kind", String(20), nullable=False),
    Column("name", String(100), nullable=False),
    Column("owner_id", String(64), nullable=False),
    Column("team_id", String(64), nullable=False),
    Column("branch_id", String(64), nullable=False),
    Column("region", String(64), nullable=False),
    Column("request_id", String(64), nullable=True, unique=True),
    Column("version", BigInteger, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

_COLUMNS = [c for c in customers.c if c.name != "request_id"]


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _to_customer(row: Row[tuple[object, ...]]) -> Customer:
    m = row._mapping
    return Customer(
        id=m["id"],
        customer_no=m["customer_no"],
        kind=CustomerKind(m["kind"]),
        profile=Profile(name=m["name"]),
        owner_id=m["owner_id"],
        team_id=m["team_id"],
        branch_id=m["branch_id"],
        region=m["region"],
        version=m["version"],
        created_by=m["created_by"],
        created_at=_utc(m["created_at"]),
        updated_at=_utc(m["updated_at"]),
    )


class CustomerStore:
    """Reads and writes customer files; writes put their events in the outbox in the same transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox) -> None:
        self._sessions = sessions
        self._outbox = outbox

    @staticmethod
    def _scoped(identity: Identity):  # type: ignore[no-untyped-def]
        c = customers.c
        return scope_condition(identity, owner=c.owner_id, team=c.team_id, branch=c.branch_id, region=c.region)

    async def get(self, identity: Identity, customer_id: str) -> Customer:
        """One customer inside the caller's scope; :class:`NotFound` otherwise (no existence leak)."""
        async with self._sessions() as session:
            query = select(*_COLUMNS).where(customers.c.id == customer_id, self._scoped(identity))
            row = (await session.execute(query)).first()
        if row is None:
            raise NotFound(f"customer {customer_id} not found")
        return _to_customer(row)

    async def find_by_request(self, identity: Identity, request_id: str) -> Customer | None:
        """The customer an earlier call with the same request id created, if any (idempotent create)."""
        async with self._sessions() as session:
            query = select(*_COLUMNS).where(customers.c.request_id == request_id, self._scoped(identity))
            row = (await session.execute(query)).first()
        return _to_customer(row) if row is not None else None

    async def create(self, customer: Customer, request_id: str) -> Customer:
        """Insert the customer and its ``customer.created`` event in one transaction."""
        async with self._sessions() as session, session.begin():
            await session.execute(
                insert(customers).values(
                    id=customer.id,
                    customer_no=customer.customer_no,
                    kind=customer.kind.value,
                    name=customer.name,
                    owner_id=customer.owner_id,
                    team_id=customer.team_id,
                    branch_id=customer.branch_id,
                    region=customer.region,
                    request_id=request_id or None,
                    version=customer.version,
                    created_by=customer.created_by,
                    created_at=customer.created_at,
                    updated_at=customer.updated_at,
                )
            )
            event: events_pb2.CustomerCreated = customer_created(customer)
            await self._outbox.add(session, CUSTOMER_CREATED, event, subject_id=customer.id, actor=customer.created_by)
        return customer
