"""Users' inbox messages and the platform's outbox and inbox.

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
        "inbox_messages",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("body", sa.String(2000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_inbox_messages_user", "inbox_messages", ["user_id", "id"])


def downgrade() -> None:
    op.drop_table("inbox_messages")
    drop_platform_tables(op)
