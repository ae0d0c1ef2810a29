"""Scheduled items and the org directory (crm_platform.schedule, crm_platform.org) — the customer service keeps its
own data keys (customer_keys) — and the data-access log of other services' reads of personal facts (birthdays).

Revision ID: 0016
"""

import sqlalchemy as sa
from alembic import op

from crm_platform.schema import create_domain_service_tables, drop_domain_service_tables

revision = "0016"
down_revision = "0015"


def upgrade() -> None:
    create_domain_service_tables(op, data_keys=False)
    op.create_table(
        "data_access_log",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("caller", sa.String(64), nullable=False),
        sa.Column("on_behalf_of", sa.String(64), nullable=False, server_default=""),
        sa.Column("request_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("purpose", sa.String(40), nullable=False),
        sa.Column("detail", sa.String(200), nullable=False, server_default=""),
        sa.Column("answered", sa.Integer, nullable=False),
    )
    op.create_index("ix_data_access_log_occurred", "data_access_log", ["occurred_at"])


def downgrade() -> None:
    op.drop_table("data_access_log")
    drop_domain_service_tables(op, data_keys=False)
