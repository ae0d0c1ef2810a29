"""Alembic migrations run programmatically, one script directory per service, safe with many replicas.

A service's ``migrations/env.py`` is two lines: ``from crm_platform.migrations import run_env; run_env()``.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_platform.db import is_postgres

log = logging.getLogger(__name__)


def _config(package: str, connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", f"{package}:migrations")
    cfg.attributes["connection"] = connection
    return cfg


async def migrate(engine: AsyncEngine, package: str) -> None:
    """Upgrade the service's database to the newest revision of ``<package>/migrations``.

    On PostgreSQL a transaction-scoped advisory lock serialises replicas starting together, so exactly one
    runs each migration and the others find the schema current.
    """

    def _upgrade(connection: Connection) -> None:
        if is_postgres(engine):
            lock_key = zlib.crc32(f"crm-migrate:{package}".encode())
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key})
        command.upgrade(_config(package, connection), "head")

    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
    log.info("database migrated", extra={"package": package})


def run_env() -> None:
    """The body of every service's Alembic ``env.py``: run on the connection :func:`migrate` handed over."""
    from alembic import context

    connection: Any = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through crm_platform.migrations.migrate (python -m <service> migrate)")
    context.configure(connection=connection, target_metadata=None, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
