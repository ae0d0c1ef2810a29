"""The customer directory remembers where a merged customer went (``merged_into``), so new records for a
retired duplicate are refused with the survivor's id instead of landing on it.

Revision ID: 0002
"""

from alembic import op

from crm_platform.directory import add_directory_merged_into, drop_directory_merged_into

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    add_directory_merged_into(op)


def downgrade() -> None:
    drop_directory_merged_into(op)
