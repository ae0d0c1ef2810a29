"""Scheduled items and the org directory (reporting keeps no personal text).

Revision ID: 0003
"""

from alembic import op

from crm_platform.schema import create_domain_service_tables, drop_domain_service_tables

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    create_domain_service_tables(op, data_keys=False)


def downgrade() -> None:
    drop_domain_service_tables(op, data_keys=False)
