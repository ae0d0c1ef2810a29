"""Customer counts per branch, and the platform's outbox (dead letters only) and inbox.

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
        "branch_customer_counts",
        sa.Column("branch_id", sa.String(64), primary_key=True),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("customers", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_branch_customer_counts_region", "branch_customer_counts", ["region"])


def downgrade() -> None:
    op.drop_table("branch_customer_counts")
    drop_platform_tables(op)
