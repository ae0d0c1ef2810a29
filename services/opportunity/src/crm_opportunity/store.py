"""Opportunity tables and queries. Every query applies the caller's scope through the customer directory."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, MetaData, Select, String, Table, UniqueConstraint, insert, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_opportunity.domain import CENT, CLOSED_STAGES, Opportunity, Stage
from crm_opportunity.events import OPPORTUNITY_CREATED, opportunity_created
from crm_platform.auth_context import Identity
from crm_platform.db import as_utc
from crm_platform.directory import CustomerDirectory, visible_condition
from crm_platform.errors import NotFound
from crm_platform.idempotency import create_once
from crm_platform.outbox import Outbox

metadata = MetaData()

opportunities = Table(
    "opportunities",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("customer_id", String(36), nullable=False),
    Column("name", String(200), nullable=False),
    Column("stage", String(20), nullable=False),
    # Hundredths of the currency unit: exact on SQLite and PostgreSQL alike, and summable for funnel reports.
    Column("expected_amount_hundredths", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("owner_id", String(64), nullable=False),
    Column("request_id", String(64), nullable=True),
    # crm_platform.idempotency.fingerprint of the request that first used request_id (NULL before 0005).
    Column("request_fingerprint", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("owner_id", "request_id", name="uq_opportunities_owner_request"),
)

_COLUMNS = [c for c in opportunities.c if c.name not in ("request_id", "request_fingerprint")]


def _to_opportunity(row: Row[tuple[object, ...]]) -> Opportunity:
    m = row._mapping
    return Opportunity(
        id=m["id"],
        customer_id=m["customer_id"],
        name=m["name"],
        stage=Stage(m["stage"]),
        expected_amount=(Decimal(m["expected_amount_hundredths"]) * CENT).quantize(CENT),
        currency=m["currency"],
        owner_id=m["owner_id"],
        created_at=as_utc(m["created_at"]),
        updated_at=as_utc(m["updated_at"]),
    )


class OpportunityStore:
    """Reads and writes opportunities; writes put their events in the outbox in the same transaction."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox, directory: CustomerDirectory
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._directory = directory

    async def create(
        self, identity: Identity, opportunity: Opportunity, request_id: str, fingerprint: str = ""
    ) -> Opportunity:
        """Store an opportunity with a customer in scope (idempotent by the caller's ``request_id``, bound to the
        request's ``fingerprint``: see :mod:`crm_platform.idempotency`)."""

        async def write(session: AsyncSession) -> Opportunity:
            await session.execute(
                insert(opportunities).values(
                    id=opportunity.id,
                    customer_id=opportunity.customer_id,
                    name=opportunity.name,
                    stage=opportunity.stage.value,
                    expected_amount_hundredths=int(opportunity.expected_amount / CENT),
                    currency=opportunity.currency,
                    owner_id=opportunity.owner_id,
                    request_id=request_id or None,
                    request_fingerprint=fingerprint or None,
                    created_at=opportunity.created_at,
                    updated_at=opportunity.updated_at,
                )
            )
            await self._outbox.add(
                session,
                OPPORTUNITY_CREATED,
                opportunity_created(opportunity),
                subject_id=opportunity.id,
                actor=identity.user_id,
            )
            return opportunity

        return await create_once(
            self._sessions,
            request_id,
            guard=lambda session: self._directory.require_in_scope(
                session, identity, opportunity.customer_id, new_record=True
            ),
            earlier=lambda session: self._by_request(session, identity, request_id),
            write=write,
            fingerprint=fingerprint,
        )

    async def get(self, identity: Identity, opportunity_id: str) -> Opportunity:
        """One opportunity whose customer is inside the caller's scope; :class:`NotFound` otherwise."""
        async with self._sessions() as session:
            row = (await session.execute(self._scoped(identity).where(opportunities.c.id == opportunity_id))).first()
        if row is None:
            raise NotFound(f"opportunity {opportunity_id} not found")
        return _to_opportunity(row)

    async def list_for_customer(
        self, identity: Identity, customer_id: str, *, open_only: bool, limit: int, after_id: str
    ) -> tuple[list[Opportunity], str]:
        """A page of a customer's opportunities, newest first; returns the items and the next page token.

        :class:`NotFound` when the customer is unknown here or outside the caller's scope. Ids are time-ordered,
        so ordering by id is creation order and the last id on a page is the token of the next.
        """
        query = self._scoped(identity).where(opportunities.c.customer_id == customer_id)
        if open_only:
            query = query.where(opportunities.c.stage.not_in(CLOSED_STAGES))
        if after_id:
            query = query.where(opportunities.c.id < after_id)
        async with self._sessions() as session:
            await self._directory.require_in_scope(session, identity, customer_id)
            rows = (await session.execute(query.order_by(opportunities.c.id.desc()).limit(limit + 1))).all()
        items = [_to_opportunity(r) for r in rows[:limit]]
        return items, (items[-1].id if len(rows) > limit else "")

    @staticmethod
    def _scoped(identity: Identity) -> Select[Any]:
        # Scope follows the customer's ownership (from the directory), not the opportunity's owner: a branch
        # head sees the pipeline of the branch's customers, and reassigning a customer moves its pipeline too.
        # A party to the record (owner_id) sees it whatever the customer's owner.
        condition = visible_condition(identity, opportunities.c.customer_id, (opportunities.c.owner_id,))
        return select(*_COLUMNS).where(condition)

    async def _by_request(
        self, session: AsyncSession, identity: Identity, request_id: str
    ) -> tuple[Opportunity, str | None] | None:
        query = (
            self._scoped(identity)
            .add_columns(opportunities.c.request_fingerprint)
            .where(opportunities.c.owner_id == identity.user_id, opportunities.c.request_id == request_id)
        )
        row = (await session.execute(query)).first()
        return (_to_opportunity(row), row.request_fingerprint) if row is not None else None
