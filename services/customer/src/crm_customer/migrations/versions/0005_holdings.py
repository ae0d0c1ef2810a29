"""Customer holdings from core banking, with the AUM and product count kept on the customer for filters.

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "customer_holdings",
        sa.Column("customer_id", sa.String(36), primary_key=True),
        sa.Column("product_code", sa.String(40), primary_key=True),
        sa.Column("product_name", sa.String(100), nullable=False),
        sa.Column("product_type", sa.String(20), nullable=False),
        sa.Column("amount", sa.Numeric(17, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("start_date", sa.Date, nullable=True),
        sa.Column("maturity_date", sa.Date, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_customer_holdings_maturity", "customer_holdings", ["maturity_date"])
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("aum", sa.Numeric(17, 2), nullable=False, server_default="0"))
        batch.add_column(sa.Column("product_count", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_customers_aum", "customers", ["aum"])


def downgrade() -> None:
    op.drop_index("ix_customers_aum", "customers")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("product_count")
        batch.drop_column("aum")
    op.drop_table("customer_holdings")
