"""Team leads and branch heads, business calendars, staff contacts (encrypted) and the scheduled items.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from crm_platform.schedule import create_schedule_tables, drop_schedule_tables

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    # User ids without a foreign key: users already point at branches and teams (crm_gateway.identity).
    with op.batch_alter_table("branches") as batch:
        batch.add_column(sa.Column("head_id", sa.String(36), nullable=True, comment="user id of the branch head"))
    with op.batch_alter_table("teams") as batch:
        batch.add_column(sa.Column("lead_id", sa.String(36), nullable=True, comment="user id of the team lead"))
    op.create_table(
        "calendars",
        sa.Column("branch_id", sa.String(32), primary_key=True, comment="'' = the bank-wide default"),
        sa.Column("spec", sa.Text, nullable=True, comment="the calendar as JSON; NULL = removed (inherits)"),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "staff_contacts",
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("kid", sa.String(32), nullable=False, comment="PII master key wrapping the data key"),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=False, comment="the user's data key, wrapped"),
        sa.Column("email_enc", sa.LargeBinary, nullable=True, comment="AES-GCM, bound to user id and field"),
        sa.Column("mobile_enc", sa.LargeBinary, nullable=True, comment="AES-GCM, bound to user id and field"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    create_schedule_tables(op)


def downgrade() -> None:
    drop_schedule_tables(op)
    op.drop_table("staff_contacts")
    op.drop_table("calendars")
    with op.batch_alter_table("teams") as batch:
        batch.drop_column("lead_id")
    with op.batch_alter_table("branches") as batch:
        batch.drop_column("head_id")
