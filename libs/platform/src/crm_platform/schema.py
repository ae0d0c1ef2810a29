"""Tables every service has besides its own: the outbox (events to publish) and the inbox (events handled).

They live in their own MetaData; each service's first migration creates them with
:func:`create_platform_tables`, so the shape is written once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, DateTime, Index, LargeBinary, MetaData, String, Table, text

from crm_platform.migrations import create_index_online

platform_metadata = MetaData()

_SENT = "published_at IS NOT NULL"

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
    # For the housekeeping's purge of sent rows only (published_at < cutoff), so partial on sent rows: an index
    # over every row also listed the unsent ones under NULL — and every dead version a mark left behind until
    # VACUUM — and PostgreSQL could take it for "published_at IS NULL" in the mark and the claim.
    Index(
        "ix_outbox_published_at",
        "published_at",
        postgresql_where=text(_SENT),
        sqlite_where=text(_SENT),
    ),
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


def outbox_sent_index_partial(op: Any) -> None:
    """Migration step: ``ix_outbox_published_at`` over sent rows only, as :data:`outbox` now declares it, for
    outboxes made before (built beside the old one, without blocking writes on PostgreSQL).

    With the old index over every row, a mark (``UPDATE … WHERE id = ANY(…) AND published_at IS NULL``) whose
    plan was cached while the table was small walked every unsent row and every dead version of a sent one under
    the NULL key: on PostgreSQL without autovacuum, 16,000 index entries read per mark after 34,000 events."""
    create_index_online(op, "ix_outbox_published_at", "outbox", ["published_at"], where=_SENT)


def outbox_sent_index_full(op: Any) -> None:
    """Migration step back: ``ix_outbox_published_at`` over every row."""
    create_index_online(op, "ix_outbox_published_at", "outbox", ["published_at"])


def create_domain_service_tables(op: Any, *, data_keys: bool) -> None:
    """Migration step of every domain service: the scheduled items, the org directory and — for a service that
    keeps personal free text — the per-customer data keys (each in its own module's MetaData)."""
    from crm_platform.org import create_org_tables
    from crm_platform.pii.keys import create_key_tables
    from crm_platform.schedule import create_schedule_tables

    create_schedule_tables(op)
    create_org_tables(op)
    if data_keys:
        create_key_tables(op)


def drop_domain_service_tables(op: Any, *, data_keys: bool) -> None:
    """The downgrade of :func:`create_domain_service_tables`."""
    from crm_platform.org import drop_org_tables
    from crm_platform.pii.keys import drop_key_tables
    from crm_platform.schedule import drop_schedule_tables

    if data_keys:
        drop_key_tables(op)
    drop_org_tables(op)
    drop_schedule_tables(op)
