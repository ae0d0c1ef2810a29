"""Customer profile fields, encrypted personal data with lookup hashes, data keys, change history.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

_PROFILE_COLUMNS = [
    sa.Column("gender", sa.String(10), nullable=False, server_default=""),
    sa.Column("birth_date", sa.Date, nullable=True),
    sa.Column("id_type", sa.String(40), nullable=False, server_default=""),
    sa.Column("id_number_enc", sa.LargeBinary, nullable=True),
    sa.Column("id_number_hash", sa.String(80), nullable=True),
    sa.Column("mobile_enc", sa.LargeBinary, nullable=True),
    sa.Column("mobile_hash", sa.String(80), nullable=True),
    sa.Column("email_enc", sa.LargeBinary, nullable=True),
    sa.Column("address_enc", sa.LargeBinary, nullable=True),
    sa.Column("contact_mobile_enc", sa.LargeBinary, nullable=True),
    sa.Column("occupation", sa.String(100), nullable=False, server_default=""),
    sa.Column("employer", sa.String(100), nullable=False, server_default=""),
    sa.Column("annual_income", sa.Numeric(17, 2), nullable=True),
    sa.Column("annual_income_currency", sa.String(3), nullable=False, server_default=""),
    sa.Column("family_situation", sa.String(500), nullable=False, server_default=""),
    sa.Column("risk_appetite", sa.String(20), nullable=False, server_default=""),
    sa.Column("risk_assessed_on", sa.Date, nullable=True),
    sa.Column("risk_expires_on", sa.Date, nullable=True),
    sa.Column("investment_experience", sa.String(200), nullable=False, server_default=""),
    sa.Column("interests", sa.Text, nullable=False, server_default="[]"),
    sa.Column("credit_code", sa.String(18), nullable=True),
    sa.Column("industry", sa.String(100), nullable=False, server_default=""),
    sa.Column("main_business", sa.String(500), nullable=False, server_default=""),
    sa.Column("contact_person", sa.String(50), nullable=False, server_default=""),
    sa.Column("parent_customer_id", sa.String(36), nullable=False, server_default=""),
    sa.Column("tier", sa.String(20), nullable=False, server_default="none"),
    sa.Column("source_channel", sa.String(30), nullable=False, server_default=""),
    sa.Column("do_not_disturb", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
]


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        for column in _PROFILE_COLUMNS:
            batch.add_column(column.copy())
    live = sa.text("erased_at IS NULL")
    # One live customer per ID number, mobile and credit code (the service checks first; these catch races).
    for column in ("id_number_hash", "mobile_hash", "credit_code"):
        op.create_index(
            f"uq_customers_{column}", "customers", [column], unique=True, postgresql_where=live, sqlite_where=live
        )
    op.create_index("ix_customers_name", "customers", ["name"])
    op.create_index("ix_customers_tier", "customers", ["tier"])
    op.create_index("ix_customers_created", "customers", ["created_at", "id"])
    op.create_index("ix_customers_branch_created", "customers", ["branch_id", "created_at", "id"])
    op.create_index("ix_customers_owner_created", "customers", ["owner_id", "created_at", "id"])
    op.create_table(
        "customer_keys",
        sa.Column("customer_id", sa.String(36), primary_key=True),
        sa.Column("kid", sa.String(40), nullable=False),
        sa.Column("wrapped", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "customer_history",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("customer_id", sa.String(36), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.String(500), nullable=False, server_default=""),
        sa.Column("changes", sa.Text, nullable=False, server_default="[]"),
    )
    op.create_index("ix_customer_history_customer", "customer_history", ["customer_id", "id"])


def downgrade() -> None:
    op.drop_table("customer_history")
    op.drop_table("customer_keys")
    for name in ("ix_customers_owner_created", "ix_customers_branch_created", "ix_customers_created"):
        op.drop_index(name, "customers")
    for name in ("ix_customers_tier", "ix_customers_name"):
        op.drop_index(name, "customers")
    for column in ("id_number_hash", "mobile_hash", "credit_code"):
        op.drop_index(f"uq_customers_{column}", "customers")
    with op.batch_alter_table("customers") as batch:
        for column in reversed(_PROFILE_COLUMNS):
            batch.drop_column(column.name)
