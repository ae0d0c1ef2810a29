"""Interaction tables and queries. Every query checks the customer against the caller's scope; the summary (the
customer's words) is sealed with the customer's data key in this service and shredded on erasure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, DateTime, LargeBinary, MetaData, String, Table, UniqueConstraint, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_interaction.domain import Channel, Interaction
from crm_interaction.events import INTERACTION_LOGGED, interaction_logged
from crm_platform.auth_context import Identity
from crm_platform.db import as_utc
from crm_platform.directory import CustomerDirectory
from crm_platform.idempotency import create_once
from crm_platform.outbox import Outbox
from crm_platform.pii.keys import CustomerKeys, SealedText

metadata = MetaData()

interactions = Table(
    "interactions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("customer_id", String(36), nullable=False),
    Column("channel", String(20), nullable=False),
    # Rows written before 0004 hold the plain summary until the start-up backfill seals it; new rows hold "".
    Column("summary", String(2000), nullable=False),
    Column("summary_enc", LargeBinary, nullable=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("logged_by", String(64), nullable=False),
    Column("request_id", String(64), nullable=True),
    # crm_platform.idempotency.fingerprint of the request that first used request_id (NULL before 0005).
    Column("request_fingerprint", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("logged_by", "request_id", name="uq_interactions_logger_request"),
)

_COLUMNS = [c for c in interactions.c if c.name not in ("request_id", "request_fingerprint")]
SUMMARY_FIELD = "interaction.summary"  # bound into the ciphertext with the customer id
SEALED_SUMMARY = SealedText(
    interactions.c.customer_id,
    interactions.c.summary_enc,
    SUMMARY_FIELD,
    interactions.c.id,
    plain=interactions.c.summary,
)
ERASED_SUMMARY = ""  # what a summary reads as once its customer was erased (key shredded)


def _to_interaction(m: object, summary: str | None) -> Interaction:
    row = m._mapping  # type: ignore[attr-defined]
    return Interaction(
        row["id"],
        row["customer_id"],
        Channel(row["channel"]),
        summary if summary is not None else ERASED_SUMMARY,
        as_utc(row["occurred_at"]),
        row["logged_by"],
        as_utc(row["created_at"]),
    )


class InteractionStore:
    """Reads and writes contact logs; writes put their events in the outbox in the same transaction."""

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

    async def _rows_to_interactions(self, session: AsyncSession, rows: Sequence[Any]) -> list[Interaction]:
        texts = await self._keys.open_rows(session, SEALED_SUMMARY, rows)
        return [_to_interaction(r, text) for r, text in zip(rows, texts, strict=True)]

    async def log(
        self, identity: Identity, interaction: Interaction, request_id: str, fingerprint: str = ""
    ) -> Interaction:
        """Store a contact with a customer in scope (idempotent by the caller's own ``request_id``, bound to the
        request's ``fingerprint``: see :mod:`crm_platform.idempotency`)."""

        async def write(session: AsyncSession) -> Interaction:
            await session.execute(
                insert(interactions).values(
                    id=interaction.id,
                    customer_id=interaction.customer_id,
                    channel=interaction.channel.value,
                    summary="",
                    summary_enc=await self._keys.seal(
                        session, interaction.customer_id, SUMMARY_FIELD, interaction.summary
                    ),
                    occurred_at=interaction.occurred_at,
                    logged_by=interaction.logged_by,
                    request_id=request_id or None,
                    request_fingerprint=fingerprint or None,
                    created_at=interaction.created_at,
                )
            )
            await self._outbox.add(
                session,
                INTERACTION_LOGGED,
                interaction_logged(interaction),
                subject_id=interaction.id,
                actor=identity.user_id,
            )
            return interaction

        return await create_once(
            self._sessions,
            request_id,
            guard=lambda session: self._directory.require_in_scope(
                session, identity, interaction.customer_id, new_record=True
            ),
            earlier=lambda session: self._by_request(session, identity, request_id),
            write=write,
            fingerprint=fingerprint,
        )

    async def _by_request(
        self, session: AsyncSession, identity: Identity, request_id: str
    ) -> tuple[Interaction, str | None] | None:
        query = select(*_COLUMNS, interactions.c.request_fingerprint).where(
            interactions.c.logged_by == identity.user_id, interactions.c.request_id == request_id
        )
        row = (await session.execute(query)).first()
        if row is None:
            return None
        return (await self._rows_to_interactions(session, [row]))[0], row.request_fingerprint

    async def list_for_customer(
        self, identity: Identity, customer_id: str, limit: int, after_id: str
    ) -> tuple[list[Interaction], str]:
        """A page of a customer's contacts, newest first; returns the items and the next page token."""
        async with self._sessions() as session:
            await self._directory.require_in_scope(session, identity, customer_id)
            query = select(*_COLUMNS).where(interactions.c.customer_id == customer_id)
            if after_id:
                query = query.where(interactions.c.id < after_id)
            rows = (await session.execute(query.order_by(interactions.c.id.desc()).limit(limit + 1))).all()
            items = await self._rows_to_interactions(session, rows[:limit])
        return items, (items[-1].id if len(rows) > limit else "")
