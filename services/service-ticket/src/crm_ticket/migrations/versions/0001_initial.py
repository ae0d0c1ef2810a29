"""Tickets, the customer directory, and the platform's outbox and inbox.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

from crm_platform.directory import create_directory_table
from crm_platform.schema import create_platform_tables, drop_platform_tables

revision = "0001"
down_revision = None


def upgrade() -> None:
    create_platform_tables(op)
    create_directory_table(op)
    op.create_table(
        "tickets",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("customer_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("urgency", sa.String(10), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("description", sa.String(4000), nullable=False),
        sa.Column("sla_deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opened_by", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("opened_by", "request_id", name="uq_tickets_opener_request"),
    )
    op.create_index("ix_tickets_customer", "tickets", ["customer_id", "id"])


def downgrade() -> None:
    op.drop_table("tickets")
    op.drop_table("customer_directory")
    drop_platform_tables(op)
