"""Customer merge: a duplicate file merged into a survivor keeps its row, marked with where it went.

* ``customers.merged_into``: the survivor's id (empty for a file that was not merged). Lists, searches and
  duplicate detection leave merged files out; reading one by id still answers it, so links from other
  systems resolve and can follow ``merged_into``.
* ``customers.merged_at``: when it was merged.

No index: lists filter ``merged_into IS NULL`` next to their indexed conditions (almost every row passes),
and nothing looks files up by survivor yet.

Revision ID: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("merged_into", sa.String(36), nullable=True))
        batch.add_column(sa.Column("merged_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("merged_at")
        batch.drop_column("merged_into")
