"""Indexes for the list and search questions 0007 left to a filter over 1,000,000 customers (issue 4).

Measured with ``EXPLAIN (ANALYZE, BUFFERS)`` on the bench's data set (``bench/customers.py``: 20 branches of
50,000, 4 teams of 10 RMs each, tiers 70/20/8/2 %):

* ``(team_id, tier, created_at, id)``: a team lead's "gold customers, newest first" walked the team's
  ``(team_id, created_at, id)`` index and dropped the other tiers one heap row at a time (657 rows for a page of
  50, 3.8 ms); now a range of this index (1.3 ms).
* ``(region, tier, created_at, id)``: the same for an executive's region (592 rows dropped, 2.5 ms; now 0.4 ms).
* ``(branch_id, name text_pattern_ops)`` on PostgreSQL: a branch head's name prefix search. The bank-wide
  ``(name text_pattern_ops)`` of 0007 finds every 张 of the bank (20,000) to keep the branch's 935, and a rare
  prefix had its matching rows of every branch read from the heap (张海: 347 rows, 32 ms cold); walking the
  branch's newest-first index instead dropped 2,772 rows (7 ms). Now the branch's matches only (0.2 ms for 张海,
  5 ms for 张, sorted). The service states the prefix as the range ``name ~>=~ $1 AND name ~<~ $2`` these
  operator classes serve (``store/fastread.py``).

Revision ID: 0009
"""

from __future__ import annotations

from alembic import op

from crm_platform.migrations import create_index_online, drop_index_online

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Built without blocking writes on PostgreSQL (CONCURRENTLY): a plain CREATE INDEX held the customers table's
# writes for about 15 s at a million rows.
_INDEXES = (
    ("ix_customers_team_tier_created", ["team_id", "tier", "created_at", "id"]),
    ("ix_customers_region_tier_created", ["region", "tier", "created_at", "id"]),
)
_POSTGRES_ONLY = (("ix_customers_branch_name_pattern", ["branch_id", "name text_pattern_ops"]),)


def _postgres() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def upgrade() -> None:
    for name, columns in (*_INDEXES, *(_POSTGRES_ONLY if _postgres() else ())):
        create_index_online(op, name, "customers", columns)


def downgrade() -> None:
    for name, _ in reversed((*_INDEXES, *(_POSTGRES_ONLY if _postgres() else ()))):
        drop_index_online(op, name)
