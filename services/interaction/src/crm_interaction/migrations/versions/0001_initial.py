"""Interactions, the customer directory, and the platform's outbox and inbox.

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
        "interactions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("customer_id", sa.String(36), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("summary", sa.String(2000), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("logged_by", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # Request ids are the caller's own: one user's retry never returns another user's record.
        sa.UniqueConstraint("logged_by", "request_id", name="uq_interactions_logger_request"),
    )
    op.create_index("ix_interactions_customer", "interactions", ["customer_id", "id"])


def downgrade() -> None:
    op.drop_table("interactions")
    op.drop_table("customer_directory")
    drop_platform_tables(op)
