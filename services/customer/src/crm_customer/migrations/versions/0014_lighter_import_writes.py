"""Lighter writes for every imported customer (issue 4).

* ``ix_customer_import_rows_customer`` — ``(job_id, customer_id)`` over the report rows that created a customer.
  A real (not dry-run) import now finds a row's duplicate among the file's earlier rows through the customers
  they created (whose unique lookup hashes it probes anyway) and this index, which names the row. The job's
  ``customer_import_keys`` rows — two per imported customer, each a random insertion into the table's primary
  key, about 15 µs of PostgreSQL's CPU per row — are now written for dry runs only. A rollback finds the report
  rows of the customers it removed by the same index.
* ``uq_customers_request_id`` — the idempotency key's uniqueness, partial on ``request_id IS NOT NULL``: only a
  single create through the API carries one, and an imported customer (none) no longer adds a NULL entry to a
  unique index. It replaces the column's constraint ``customers_request_id_key``. The look-up
  ``request_id = $1`` implies the predicate and uses it. On PostgreSQL only (built ``CONCURRENTLY``, the old
  constraint enforcing the rule until the new index is valid); SQLite keeps its constraint.

Revision ID: 0014
"""

from __future__ import annotations

from alembic import op

from crm_platform.migrations import create_index_online, drop_index_online

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def _postgres() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def upgrade() -> None:
    create_index_online(
        op,
        "ix_customer_import_rows_customer",
        "customer_import_rows",
        ["job_id", "customer_id"],
        where="customer_id IS NOT NULL",
    )
    if _postgres():
        create_index_online(
            op, "uq_customers_request_id", "customers", ["request_id"], unique=True, where="request_id IS NOT NULL"
        )
        op.execute("ALTER TABLE customers DROP CONSTRAINT IF EXISTS customers_request_id_key")


def downgrade() -> None:
    if _postgres():
        op.execute("ALTER TABLE customers ADD CONSTRAINT customers_request_id_key UNIQUE (request_id)")
        drop_index_online(op, "uq_customers_request_id")
    drop_index_online(op, "ix_customer_import_rows_customer")
