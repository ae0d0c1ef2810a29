"""Managed tags, last contact, and the indexes lists and searches over a million customers need.

* ``customers.last_contact_at``: the latest logged contact, kept from interaction events (filter "last contact
  before"); indexed per branch because the branch head's "not contacted since" list is the common question.
* ``customer_tags.managed``: whether a tag on a customer came from the managed catalog.
* ``customer_managed_tags``: the catalog, bank-wide (``branch_id`` empty) or per branch.
* Indexes so every scope's default list (newest first) and the common filters are index scans, never a sort of
  the whole scope: team and region scopes, tier within a branch, name order within a branch, and name prefix
  search (``text_pattern_ops`` on PostgreSQL, so ``LIKE '李%'`` uses the index whatever the collation).

Revision ID: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_INDEXES = (
    ("ix_customers_team_created", ["team_id", "created_at", "id"]),
    ("ix_customers_region_created", ["region", "created_at", "id"]),
    ("ix_customers_branch_tier_created", ["branch_id", "tier", "created_at", "id"]),
    ("ix_customers_branch_name", ["branch_id", "name", "id"]),
    ("ix_customers_owner_name", ["owner_id", "name", "id"]),
    ("ix_customers_branch_last_contact", ["branch_id", "last_contact_at"]),
    ("ix_customers_owner_last_contact", ["owner_id", "last_contact_at"]),
)


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("last_contact_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("customer_tags") as batch:
        batch.add_column(sa.Column("managed", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "customer_managed_tags",
        sa.Column("branch_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(20), primary_key=True),
        sa.Column("description", sa.String(200), nullable=False, server_default=""),
        sa.Column("applicable_roles", sa.Text, nullable=False, server_default="[]"),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    for name, columns in _INDEXES:
        op.create_index(name, "customers", columns)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_customers_name_pattern ON customers (name text_pattern_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_customers_name_pattern", "customers")
    for name, _ in reversed(_INDEXES):
        op.drop_index(name, "customers")
    op.drop_table("customer_managed_tags")
    with op.batch_alter_table("customer_tags") as batch:
        batch.drop_column("managed")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("last_contact_at")
