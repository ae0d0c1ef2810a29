"""Drop the single-column indexes every list and search has a better index for (issue 4).

``ix_customers_owner``, ``ix_customers_team`` and ``ix_customers_branch`` are each the first column of the
scope's composite indexes (``(owner_id, created_at, id, birth_date)``, ``(owner_id, name, id)``, … from 0002,
0007, 0009, 0010), which serve an equality on that column just as well; ``ix_customers_tier`` (four values) is
never chosen over the scope's ``(…, tier, created_at, id)`` indexes, and a caller without a scope column (scope
``all``) walks the newest-first index instead. Each customer written paid for 26 index entries; 22 remain, and
with them less WAL per create and a smaller table to keep cached. Dropped ``CONCURRENTLY`` on PostgreSQL.

Revision ID: 0011
"""

from __future__ import annotations

from alembic import op

from crm_platform.migrations import create_index_online, drop_index_online

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_REDUNDANT = {
    "ix_customers_owner": "owner_id",
    "ix_customers_team": "team_id",
    "ix_customers_branch": "branch_id",
    "ix_customers_tier": "tier",
}


def upgrade() -> None:
    for name in _REDUNDANT:
        drop_index_online(op, name)


def downgrade() -> None:
    for name, column in _REDUNDANT.items():
        create_index_online(op, name, "customers", [column])
