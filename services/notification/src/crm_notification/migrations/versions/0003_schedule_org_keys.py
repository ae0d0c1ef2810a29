"""Scheduled items, the org directory, per-customer data keys and the staff contacts (sealed; only this service
keeps them).

Revision ID: 0003
"""

from alembic import op

from crm_platform.org import create_staff_contact_tables, drop_staff_contact_tables
from crm_platform.schema import create_domain_service_tables, drop_domain_service_tables

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    create_domain_service_tables(op, data_keys=True)
    create_staff_contact_tables(op)


def downgrade() -> None:
    drop_staff_contact_tables(op)
    drop_domain_service_tables(op, data_keys=True)
