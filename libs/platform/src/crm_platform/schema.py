"""Tables every service has besides its own: the outbox (events to publish) and the inbox (events handled).

They live in their own MetaData; each service's first migration creates them with
:func:`create_platform_tables`, so the shape is written once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, DateTime, Index, LargeBinary, MetaData, String, Table, text

platform_metadata = MetaData()

outbox = Table(
    "outbox",
    platform_metadata,
    Column("id", String(36), primary_key=True, comment="event id (UUIDv7), also the Nats-Msg-Id"),
    Column("subject", String(255), nullable=False),
    Column("envelope", LargeBinary, nullable=False, comment="serialised crm.common.v1.EventEnvelope"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Index(
        "ix_outbox_pending",
        "id",
        postgresql_where=text("published_at IS NULL"),
        sqlite_where=text("published_at IS NULL"),
    ),
    Index("ix_outbox_published_at", "published_at"),
)

inbox = Table(
    "inbox",
    platform_metadata,
    Column("consumer", String(100), primary_key=True),
    Column("event_id", String(36), primary_key=True),
    Column("outcome", String(20), nullable=False, comment="handled or dead_lettered"),
    Column("handled_at", DateTime(timezone=True), nullable=False),
)


def create_platform_tables(op: Any) -> None:
    """Create the outbox and inbox in a service's first Alembic migration (``op`` is ``alembic.op``)."""
    platform_metadata.create_all(op.get_bind())


def drop_platform_tables(op: Any) -> None:
    """Drop the outbox and inbox (the downgrade of :func:`create_platform_tables`)."""
    platform_metadata.drop_all(op.get_bind())
