"""Customers, with the platform's outbox and inbox.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

from crm_platform.schema import create_platform_tables, drop_platform_tables

revision = "0001"
down_revision = None


def upgrade() -> None:
    create_platform_tables(op)
    op.create_table(
        "customers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("customer_no", sa.String(20), nullable=False, unique=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("owner_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("team_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("branch_id", sa.String(64), nullable=False),
        sa.Column("region", sa.String(64), nullable=False, server_default=""),
        sa.Column("request_id", sa.String(64), nullable=True, unique=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_customers_owner", "customers", ["owner_id"])
    op.create_index("ix_customers_branch", "customers", ["branch_id"])
    op.create_index("ix_customers_team", "customers", ["team_id"])


def downgrade() -> None:
    op.drop_table("customers")
    drop_platform_tables(op)
