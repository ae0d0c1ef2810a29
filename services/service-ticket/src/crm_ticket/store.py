"""Ticket tables and queries. Every query applies the caller's scope through the customer directory, or the
caller is a party to the ticket (who opened it, who handles it). The description (the customer's words) is sealed
with the customer's data key in this service and shredded on erasure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, DateTime, LargeBinary, MetaData, Select, String, Table, UniqueConstraint, insert, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_platform.auth_context import Identity
from crm_platform.db import as_utc
from crm_platform.directory import CustomerDirectory, visible_condition
from crm_platform.errors import NotFound
from crm_platform.idempotency import create_once
from crm_platform.outbox import Outbox
from crm_platform.pii.keys import CustomerKeys, SealedText
from crm_ticket.domain import Ticket, TicketKind, TicketStatus, Urgency
from crm_ticket.events import TICKET_OPENED, ticket_opened

metadata = MetaData()

tickets = Table(
    "tickets",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("customer_id", String(36), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("urgency", String(10), nullable=False),
    Column("status", String(10), nullable=False),
    # Rows written before 0004 hold the plain description until the start-up backfill seals it; new rows hold "".
    Column("description", String(4000), nullable=False),
    Column("description_enc", LargeBinary, nullable=True),
    Column("sla_deadline", DateTime(timezone=True), nullable=False),
    Column("opened_by", String(64), nullable=False),
    Column("handler_id", String(64), nullable=False, default=""),
    Column("request_id", String(64), nullable=True),
    # crm_platform.idempotency.fingerprint of the request that first used request_id (NULL before 0005).
    Column("request_fingerprint", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("opened_by", "request_id", name="uq_tickets_opener_request"),
)

_COLUMNS = [c for c in tickets.c if c.name not in ("request_id", "request_fingerprint")]
DESCRIPTION_FIELD = "ticket.description"  # bound into the ciphertext with the customer id
SEALED_DESCRIPTION = SealedText(
    tickets.c.customer_id, tickets.c.description_enc, DESCRIPTION_FIELD, tickets.c.id, plain=tickets.c.description
)
ERASED_DESCRIPTION = ""  # what a description reads as once its customer was erased (key shredded)


def _to_ticket(row: Row[tuple[object, ...]], description: str | None) -> Ticket:
    m = row._mapping
    return Ticket(
        id=m["id"],
        customer_id=m["customer_id"],
        kind=TicketKind(m["kind"]),
        urgency=Urgency(m["urgency"]),
        status=TicketStatus(m["status"]),
        description=description if description is not None else ERASED_DESCRIPTION,
        sla_deadline=as_utc(m["sla_deadline"]),
        opened_by=m["opened_by"],
        created_at=as_utc(m["created_at"]),
        handler_id=m["handler_id"],
    )


class TicketStore:
    """Reads and writes tickets; writes put their events in the outbox in the same transaction."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        directory: CustomerDirectory,
        keys: CustomerKeys,
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._directory = directory
        self._keys = keys

    async def _tickets(self, session: AsyncSession, rows: Sequence[Any]) -> list[Ticket]:
        texts = await self._keys.open_rows(session, SEALED_DESCRIPTION, rows)
        return [_to_ticket(r, text) for r, text in zip(rows, texts, strict=True)]

    async def open(self, identity: Identity, ticket: Ticket, request_id: str, fingerprint: str = "") -> Ticket:
        """Store a ticket for a customer in scope (idempotent by the caller's ``request_id``, bound to the
        request's ``fingerprint``: see :mod:`crm_platform.idempotency`)."""

        async def write(session: AsyncSession) -> Ticket:
            await session.execute(
                insert(tickets).values(
                    id=ticket.id,
                    customer_id=ticket.customer_id,
                    kind=ticket.kind.value,
                    urgency=ticket.urgency.value,
                    status=ticket.status.value,
                    description="",
                    description_enc=await self._keys.seal(
                        session, ticket.customer_id, DESCRIPTION_FIELD, ticket.description
                    ),
                    handler_id=ticket.handler_id,
                    sla_deadline=ticket.sla_deadline,
                    opened_by=ticket.opened_by,
                    request_id=request_id or None,
                    request_fingerprint=fingerprint or None,
                    created_at=ticket.created_at,
                )
            )
            await self._outbox.add(
                session, TICKET_OPENED, ticket_opened(ticket), subject_id=ticket.id, actor=identity.user_id
            )
            return ticket

        return await create_once(
            self._sessions,
            request_id,
            guard=lambda session: self._directory.require_in_scope(
                session, identity, ticket.customer_id, new_record=True
            ),
            earlier=lambda session: self._by_request(session, identity, request_id),
            write=write,
            fingerprint=fingerprint,
        )

    async def get(self, identity: Identity, ticket_id: str) -> Ticket:
        """One ticket whose customer is inside the caller's scope; :class:`NotFound` otherwise."""
        async with self._sessions() as session:
            row = (await session.execute(self._scoped(identity).where(tickets.c.id == ticket_id))).first()
            if row is None:
                raise NotFound(f"ticket {ticket_id} not found")
            return (await self._tickets(session, [row]))[0]

    async def list_for_customer(
        self, identity: Identity, customer_id: str, *, open_only: bool, limit: int, after_id: str
    ) -> tuple[list[Ticket], str]:
        """A page of a customer's tickets, newest first; returns the items and the next page token.

        :class:`NotFound` when the customer is unknown here or outside the caller's scope. Ids are time-ordered,
        so ordering by id is creation order and the last id on a page is the token of the next.
        """
        query = self._scoped(identity).where(tickets.c.customer_id == customer_id)
        if open_only:
            query = query.where(tickets.c.status == TicketStatus.OPEN.value)
        if after_id:
            query = query.where(tickets.c.id < after_id)
        async with self._sessions() as session:
            await self._directory.require_in_scope(session, identity, customer_id)
            rows = (await session.execute(query.order_by(tickets.c.id.desc()).limit(limit + 1))).all()
            items = await self._tickets(session, rows[:limit])
        return items, (items[-1].id if len(rows) > limit else "")

    @staticmethod
    def _scoped(identity: Identity) -> Select[Any]:
        # Scope follows the customer's ownership (from the directory), not who opened the ticket: a teller may
        # open it at the counter, and the customer's RM and branch head must see it.
        # A party to the record (opened_by, handler_id) sees it whatever the customer's owner.
        condition = visible_condition(
            identity,
            tickets.c.customer_id,
            (
                tickets.c.opened_by,
                tickets.c.handler_id,
            ),
        )
        return select(*_COLUMNS).where(condition)

    async def _by_request(
        self, session: AsyncSession, identity: Identity, request_id: str
    ) -> tuple[Ticket, str | None] | None:
        query = (
            self._scoped(identity)
            .add_columns(tickets.c.request_fingerprint)
            .where(tickets.c.opened_by == identity.user_id, tickets.c.request_id == request_id)
        )
        row = (await session.execute(query)).first()
        if row is None:
            return None
        return (await self._tickets(session, [row]))[0], row.request_fingerprint
