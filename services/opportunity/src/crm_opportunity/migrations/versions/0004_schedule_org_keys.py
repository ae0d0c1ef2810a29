"""Scheduled items, the org directory and per-customer data keys.

Revision ID: 0004
"""

from alembic import op

from crm_platform.schema import create_domain_service_tables, drop_domain_service_tables

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    create_domain_service_tables(op, data_keys=True)


def downgrade() -> None:
    drop_domain_service_tables(op, data_keys=True)
