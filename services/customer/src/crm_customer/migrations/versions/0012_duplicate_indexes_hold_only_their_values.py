"""The unique indexes of the duplicate rule hold only the customers that have the value (issue 4).

``uq_customers_id_number_hash``, ``uq_customers_mobile_hash`` and ``uq_customers_credit_code`` were partial on
``erased_at IS NULL`` alone. Each then also listed every live customer without the value (every individual in
the credit-code index), so each was an index of "all live customers" as much as of its column, and PostgreSQL
could answer a look-up by one column through another's index: on a table it has no statistics for yet (never
analysed: autovacuum off, or a restore or bulk load before its first ANALYZE) the cached plan of the one-statement
create read every live customer through the credit-code index and filtered them by ID number hash — measured at
27 ms per create over 22,000 customers, growing with the table, and create throughput falling from 330/s to 150/s
within a minute.

Each index now also requires its own column ``IS NOT NULL``. A look-up ``column = value`` implies that (``=`` is
strict), so it can still use its own index, and only its own. Uniqueness is unchanged (NULLs never clashed).
Rebuilt ``CONCURRENTLY`` on PostgreSQL; the old index enforces the rule until the new one is valid.

Revision ID: 0012
"""

from __future__ import annotations

from alembic import op

from crm_platform.migrations import create_index_online

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_COLUMNS = ("id_number_hash", "mobile_hash", "credit_code")


def upgrade() -> None:
    for column in _COLUMNS:
        create_index_online(
            op,
            f"uq_customers_{column}",
            "customers",
            [column],
            unique=True,
            where=f"erased_at IS NULL AND {column} IS NOT NULL",
        )


def downgrade() -> None:
    for column in _COLUMNS:
        create_index_online(op, f"uq_customers_{column}", "customers", [column], unique=True, where="erased_at IS NULL")
