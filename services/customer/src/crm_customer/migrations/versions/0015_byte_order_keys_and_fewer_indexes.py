"""Six fewer indexes per customer written, and byte-order comparisons on its name, number and lookup hashes
(issue 4, import throughput).

Every customer written — one create, or each row of an import — inserts an entry into each index of
``customers``. Measured on PostgreSQL 15 (100,000 inserts, alternating runs): the 16 non-unique indexes cost
about 45 µs of its CPU per customer; the changes to ``customers`` below save about 18 µs of it (a 100,000-row
import: 6,796 → 7,363 and 7,102 → 7,672 rows/s in alternating runs).

* ``name``, ``customer_no``, ``id_number_hash``, ``mobile_hash`` get ``COLLATE "C"`` (byte order, which is code
  point order for UTF-8). On a database whose default collation is a libc locale (``C.UTF-8``, ``en_US``,
  ``zh_CN``), every comparison of two different names or hashes went through ``strcoll``; ``C`` compares with
  ``memcmp``. The order is the one every database we ship already has: CloudNativePG creates its databases with
  ``lc_collate = C`` (``deploy/``), and ``C.UTF-8`` (the PostgreSQL of CI and of the bench) sorts by code
  point. On a database created with another locale, a sort by name becomes code point order instead of that
  locale's.
* So a plain B-tree on ``name`` serves a prefix search (``name >= $n AND name < $m``, or ``LIKE '李%'``) and
  the two ``text_pattern_ops`` indexes of 0007 and 0009, ``ix_customers_name_pattern`` and
  ``ix_customers_branch_name_pattern``, go. ``store/fastread.py`` now writes the prefix range with ``>=``/``<``.
* The tier lists (``team``, ``branch``, ``region`` × tier, newest first) are served by the scope's newest-first
  index with ``tier`` as its last key column, as 0010 did for the age band: the B-tree checks the tier on each
  entry it walks, without a heap visit, so a page of 50 diamond customers (2 % of them) walks about 2,500 entries
  of the branch instead of 50 of a ``(branch_id, tier, created_at, id)`` index. The three tier indexes go.
* ``customer_history``'s primary key becomes ``(customer_id, id)``, the index every read of a history already
  used, and the index on ``id`` alone goes: one index fewer for every history row (each create, change and
  imported row). Its ids are UUIDv7, unique by construction; the one update by id (erasure scrubbing a
  customer's history) names the customer too. On PostgreSQL only (SQLite would copy the table to change a key).

Locks: the new newest-first indexes are built ``CONCURRENTLY`` beside the old ones and take their names; indexes
are dropped ``CONCURRENTLY``. The collation change is one ``ALTER TABLE`` that rebuilds the six indexes on those
columns under an exclusive lock on ``customers``: 7.4 s for a million customers on the bench machine (default
``maintenance_work_mem``), during which their reads and writes wait. On a large bank, run it in a quiet hour.
Replicas of the previous version, still running during a rollout, search by name prefix without an index until
they are replaced. SQLite (``make run``) compares bytes already (``BINARY``): there only the indexes change.

Revision ID: 0015
"""

from __future__ import annotations

from alembic import op

from crm_platform.migrations import create_index_online, drop_index_online

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# column → its type, to restate with the new collation
_BYTE_ORDER = {
    "name": "VARCHAR(100)",
    "customer_no": "VARCHAR(20)",
    "id_number_hash": "VARCHAR(80)",
    "mobile_hash": "VARCHAR(80)",
}
# the text_pattern_ops indexes this drops → their columns
_PATTERN = {
    "ix_customers_name_pattern": ["name text_pattern_ops"],
    "ix_customers_branch_name_pattern": ["branch_id", "name text_pattern_ops"],
}
# newest-first index → its scope column; the tier index it replaces is ix_customers_<scope>_tier_created
_NEWEST_FIRST = {
    "ix_customers_team_created": "team_id",
    "ix_customers_branch_created": "branch_id",
    "ix_customers_region_created": "region",
}


def _postgres() -> bool:
    return bool(op.get_bind().dialect.name == "postgresql")


def _tier_index(name: str) -> str:
    return name.replace("_created", "_tier_created")


def upgrade() -> None:
    for name, scope in _NEWEST_FIRST.items():
        create_index_online(op, name, "customers", [scope, "created_at", "id", "birth_date", "tier"])
        drop_index_online(op, _tier_index(name))
    if not _postgres():
        return
    for name in _PATTERN:
        drop_index_online(op, name)
    _collate("C")
    create_index_online(op, "customer_history_key", "customer_history", ["customer_id", "id"], unique=True)
    _history_key_from("customer_history_key")
    drop_index_online(op, "ix_customer_history_customer")


def downgrade() -> None:
    if _postgres():
        create_index_online(op, "ix_customer_history_customer", "customer_history", ["customer_id", "id"])
        create_index_online(op, "customer_history_key", "customer_history", ["id"], unique=True)
        _history_key_from("customer_history_key")
        _collate("default")
        for name, columns in _PATTERN.items():
            create_index_online(op, name, "customers", columns)
    for name, scope in _NEWEST_FIRST.items():
        create_index_online(op, _tier_index(name), "customers", [scope, "tier", "created_at", "id"])
        create_index_online(op, name, "customers", [scope, "created_at", "id", "birth_date"])


def _collate(collation: str) -> None:
    """The :data:`_BYTE_ORDER` columns in ``collation`` (one statement: their indexes rebuilt once)."""
    changes = ", ".join(
        f'ALTER COLUMN {column} TYPE {kind} COLLATE "{collation}"' for column, kind in _BYTE_ORDER.items()
    )
    op.execute(f"ALTER TABLE customers {changes}")


def _history_key_from(index: str) -> None:
    """``customer_history``'s primary key becomes unique index ``index`` (renamed to the key's name)."""
    op.execute(
        "ALTER TABLE customer_history DROP CONSTRAINT customer_history_pkey, "
        f"ADD CONSTRAINT customer_history_pkey PRIMARY KEY USING INDEX {index}"
    )
