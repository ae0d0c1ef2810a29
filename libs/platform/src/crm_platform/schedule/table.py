"""The ``scheduled_items`` table: one row per key, the newest version of what is to happen and when."""

from __future__ import annotations

from typing import Any

from sqlalchemy import CheckConstraint, Column, DateTime, Index, Integer, MetaData, String, Table, Text, text

schedule_metadata = MetaData()

PENDING, DONE, DEAD, CANCELLED = "pending", "done", "dead", "cancelled"

# Status conditions are written as SQL literals, never as bound parameters: only a literal lets PostgreSQL (in
# a generic plan) and SQLite match a query to a partial index below.
IS_PENDING = "status = 'pending'"
IS_FINISHED = "status IN ('done', 'cancelled')"
IS_DEAD = "status = 'dead'"

scheduled_items = Table(
    "scheduled_items",
    schedule_metadata,
    Column("key", String(200), primary_key=True, comment="what the item is about, e.g. reminder:<task_id>"),
    Column("kind", String(64), nullable=False, comment="names the handler that runs it"),
    Column("version", Integer, nullable=False, comment="1 when first scheduled, one more at each re-schedule"),
    Column("due_at", DateTime(timezone=True), nullable=False, comment="when to run (a failed run's next attempt)"),
    Column("payload", Text, nullable=False, comment="JSON object handed to the handler"),
    Column("status", String(16), nullable=False, comment="pending, done, dead or cancelled"),
    Column("attempts", Integer, nullable=False, comment="failed runs of this version"),
    Column("last_error", Text, nullable=True, comment="exception class and message of the last failed run, cut"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("done_at", DateTime(timezone=True), nullable=True, comment="when its run was marked done"),
    CheckConstraint(f"status IN ('{PENDING}', '{DONE}', '{DEAD}', '{CANCELLED}')", name="ck_scheduled_items_status"),
    # "Pending and due, oldest first" is a range scan of this index; it holds the pending rows only, so rows
    # done long ago cost it nothing.
    Index("ix_scheduled_items_due", "due_at", postgresql_where=text(IS_PENDING), sqlite_where=text(IS_PENDING)),
    # The purge of finished rows older than the retention.
    Index(
        "ix_scheduled_items_finished",
        "updated_at",
        postgresql_where=text(IS_FINISHED),
        sqlite_where=text(IS_FINISHED),
    ),
    # The dead-items gauge (a handful of rows, read once a second).
    Index("ix_scheduled_items_dead", "key", postgresql_where=text(IS_DEAD), sqlite_where=text(IS_DEAD)),
)


def create_schedule_tables(op: Any) -> None:
    """Create ``scheduled_items`` in a service's Alembic migration (``op`` is ``alembic.op``)."""
    schedule_metadata.create_all(op.get_bind())


def drop_schedule_tables(op: Any) -> None:
    """Drop ``scheduled_items`` (the downgrade of :func:`create_schedule_tables`)."""
    schedule_metadata.drop_all(op.get_bind())
