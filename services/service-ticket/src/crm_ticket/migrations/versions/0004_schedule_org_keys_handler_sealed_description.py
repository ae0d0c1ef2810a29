"""Scheduled items, the org directory and per-customer data keys; a ticket's handler (a party to it); the
description sealed with the customer's key (``description_enc``; rows written before keep ``description`` until
the start-up backfill seals them).

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

from crm_platform.schema import create_domain_service_tables, drop_domain_service_tables

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    create_domain_service_tables(op, data_keys=True)
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("handler_id", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("description_enc", sa.LargeBinary, nullable=True))
    op.create_index("ix_tickets_handler", "tickets", ["handler_id"])


def downgrade() -> None:
    op.drop_index("ix_tickets_handler", "tickets")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("description_enc")
        batch.drop_column("handler_id")
    drop_domain_service_tables(op, data_keys=True)
