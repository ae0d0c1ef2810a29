"""The newest-first indexes of every scope carry ``birth_date`` as a last key column, so an age band is checked
in the index instead of on each heap row the walk passes (issue 4).

A list newest first walks ``(scope, created_at, id)`` backwards and keeps the rows its other filters accept. For
an age band (``age_min``/``age_max`` → ``birth_date`` bounds) every passed row was fetched from the heap to be
dropped: in the bench (``bench/customers.py``) the 5,300 customers its create phase adds to branch BJ001 are the
branch's newest and were all born in 1971, so "aged 30–40, tagged 高净值" walked 5,524 of them for a page of 50
(9 ms of PostgreSQL per request, the slowest list at 50 req/s). With ``birth_date`` a key column the bounds are
index conditions, which a B-tree checks on the index entry: 2 ms, 0.6 ms of it the walk. Same indexes, same
names, one date wider (74 → 82 MB over a million customers); the keyset range ``(created_at, id) < (…)`` and
the order still come from their leading columns.

Revision ID: 0010
"""

from __future__ import annotations

from alembic import op

from crm_platform.migrations import create_index_online

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# name → the scope column before created_at, id ("" for the bank-wide index)
_NEWEST_FIRST = {
    "ix_customers_created": "",
    "ix_customers_owner_created": "owner_id",
    "ix_customers_team_created": "team_id",
    "ix_customers_branch_created": "branch_id",
    "ix_customers_region_created": "region",
}


def _rebuild(with_birth_date: bool) -> None:
    # Each new index is built beside the old one and takes its name when ready (CONCURRENTLY on PostgreSQL):
    # lists keep an index all along and writes are never held.
    for name, scope in _NEWEST_FIRST.items():
        columns = [*([scope] if scope else []), "created_at", "id", *(["birth_date"] if with_birth_date else [])]
        create_index_online(op, name, "customers", columns)


def upgrade() -> None:
    _rebuild(with_birth_date=True)


def downgrade() -> None:
    _rebuild(with_birth_date=False)
