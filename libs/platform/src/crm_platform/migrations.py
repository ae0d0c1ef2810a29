"""Alembic migrations run programmatically, one script directory per service, safe with many replicas.

A service's ``migrations/env.py`` is two lines: ``from crm_platform.migrations import run_env; run_env()``.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Sequence
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crm_platform.db import is_postgres

log = logging.getLogger(__name__)

_LOCK_POLL_SECONDS = 0.2


def _config(package: str, connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", f"{package}:migrations")
    cfg.attributes["connection"] = connection
    return cfg


async def migrate(engine: AsyncEngine, package: str) -> None:
    """Upgrade the service's database to the newest revision of ``<package>/migrations``.

    Each migration script runs in a transaction of its own, so one may step out of it for work PostgreSQL only
    does outside a transaction (``CREATE INDEX CONCURRENTLY``, through ``op.get_context().autocommit_block()``,
    see :func:`create_index_online`) without a later failure undoing the runs before it. On PostgreSQL a
    session-level advisory lock, held on this connection across those transactions, serialises replicas starting
    together, so exactly one runs each migration and the others find the schema current. A replica waits for
    the lock by polling ``pg_try_advisory_lock`` outside any transaction: blocked inside ``pg_advisory_lock`` it
    would hold a snapshot, which a concurrent index build of the lock's holder waits for (a deadlock).
    """
    lock_key = zlib.crc32(f"crm-migrate:{package}".encode())
    postgres = is_postgres(engine)
    async with engine.connect() as conn:
        if postgres:
            default_level = conn.default_isolation_level
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            waited = False
            while not await _try_lock(conn, lock_key):  # polled: the lock is held by another process
                if not waited:
                    log.info("waiting for another replica's migrations", extra={"package": package})
                    waited = True
                await asyncio.sleep(_LOCK_POLL_SECONDS)
            await conn.commit()  # the autocommit "transaction" SQLAlchemy began: isolation may change after it
            await conn.execution_options(isolation_level=default_level)
        try:
            await conn.run_sync(lambda connection: command.upgrade(_config(package, connection), "head"))
        except BaseException:
            # Close the connection rather than return it to the pool: the lock goes with it, whatever state the
            # failure left the session in.
            await conn.invalidate()
            raise
        if postgres:
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key})
            await conn.commit()
    log.info("database migrated", extra={"package": package})


async def _try_lock(conn: AsyncConnection, key: int) -> bool:
    return bool((await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar())


def run_env() -> None:
    """The body of every service's Alembic ``env.py``: run on the connection :func:`migrate` handed over."""
    from alembic import context

    connection: Any = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through crm_platform.migrations.migrate (python -m <service> migrate)")
    context.configure(connection=connection, target_metadata=None, render_as_batch=True, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


def create_index_online(
    op: Any, name: str, table: str, columns: Sequence[str], *, unique: bool = False, where: str = ""
) -> None:
    """Migration step: create (or rebuild, under the same name) index ``name`` on ``table`` over ``columns``
    (SQL column expressions), ``unique`` and partial (``where``, an SQL condition) when asked, without blocking
    writes on PostgreSQL.

    There it is built ``CONCURRENTLY`` outside the migration's transaction under a temporary name, which then
    takes the place of any index of the same name; a build an interrupted run left half done is dropped first,
    so the step can run again. Queries keep the old index until the new one is ready — and a unique index being
    rebuilt keeps enforcing its rule throughout, as the old one goes only once the new one is valid. Elsewhere
    (SQLite) a plain drop and create."""
    column_list = ", ".join(columns)
    kind = "UNIQUE INDEX" if unique else "INDEX"
    predicate = f" WHERE {where}" if where else ""
    if op.get_bind().dialect.name != "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {name}")
        op.execute(f"CREATE {kind} {name} ON {table} ({column_list}){predicate}")
        return
    building = f"{name}_building"
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {building}")
        op.execute(f"CREATE {kind} CONCURRENTLY {building} ON {table} ({column_list}){predicate}")
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        op.execute(f"ALTER INDEX {building} RENAME TO {name}")


def drop_index_online(op: Any, name: str) -> None:
    """Migration step: drop index ``name`` if it exists, without blocking reads and writes on PostgreSQL
    (``DROP INDEX CONCURRENTLY``, outside the migration's transaction)."""
    if op.get_bind().dialect.name != "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {name}")
        return
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
