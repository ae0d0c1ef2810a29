"""Customer tags.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "customer_tags",
        sa.Column("customer_id", sa.String(36), primary_key=True),
        sa.Column("tag", sa.String(20), primary_key=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_customer_tags_tag", "customer_tags", ["tag", "customer_id"])


def downgrade() -> None:
    op.drop_table("customer_tags")
