"""Scheduled items, the org directory and per-customer data keys; the contact summary sealed with the customer's
key (``summary_enc``; rows written before keep ``summary`` until the start-up backfill seals them).

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

from crm_platform.schema import create_domain_service_tables, drop_domain_service_tables

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    create_domain_service_tables(op, data_keys=True)
    with op.batch_alter_table("interactions") as batch:
        batch.add_column(sa.Column("summary_enc", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("interactions") as batch:
        batch.drop_column("summary_enc")
    drop_domain_service_tables(op, data_keys=True)
