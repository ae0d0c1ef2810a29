"""Database access: one async SQLAlchemy engine per service, on PostgreSQL (asyncpg) or SQLite (aiosqlite).

The URL is chosen in this order: ``<SERVICE>_DATABASE_URL``; else ``CRM_POSTGRES_URL`` plus the database
``crm_<service>`` (created when missing); else a SQLite file ``<CRM_DATA_DIR>/<service>.db``.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from crm_platform.metrics import DB_POOL_IN_USE

log = logging.getLogger(__name__)


def as_utc(value: dt.datetime) -> dt.datetime:
    """A stored time as an aware UTC datetime (SQLite hands back naive ones; every stored time is UTC)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def normalise_url(url: str) -> URL:
    """Accept plain ``postgresql://`` and ``sqlite://`` URLs and pick the async drivers."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed


def resolve_database_url(domain: str, database_url: str, postgres_url: str, data_dir: Path) -> URL:
    """The database URL of service ``domain`` from its settings (see the module docstring)."""
    if database_url:
        return normalise_url(database_url)
    if postgres_url:
        return normalise_url(postgres_url).set(database=f"crm_{domain}")
    data_dir.mkdir(parents=True, exist_ok=True)
    return make_url(f"sqlite+aiosqlite:///{(data_dir / f'{domain}.db').resolve()}")


def is_postgres(url: URL | AsyncEngine) -> bool:
    """Whether ``url`` (or an engine's URL) points at PostgreSQL."""
    target = url.url if isinstance(url, AsyncEngine) else url
    return target.get_backend_name() == "postgresql"


async def ensure_database(url: URL) -> None:
    """Create the PostgreSQL database of ``url`` when it does not exist (no-op for SQLite)."""
    if not is_postgres(url) or not url.database:
        return
    import asyncpg  # local: only PostgreSQL deployments need it at this point

    server = url.set(drivername="postgresql", database="postgres")
    conn = await asyncpg.connect(server.render_as_string(hide_password=False))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", url.database)
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{url.database}"')
                log.info("created database", extra={"database": url.database})
            except asyncpg.DuplicateDatabaseError:
                pass  # another replica created it between our check and our create
    finally:
        await conn.close()


def create_engine(url: URL, pool_size: int = 10, **kwargs: Any) -> AsyncEngine:
    """An async engine with the pragmas and pool settings this project relies on.

    Always with ``hide_parameters=True``: SQLAlchemy otherwise writes a failed statement's bound values (names,
    birth dates, ciphertexts, lookup hashes) into the error's text and into its echo log, and from there into
    log lines; a caller cannot turn that back on.
    """
    kwargs["hide_parameters"] = True
    if is_postgres(url):
        # No pool_pre_ping: it costs a round trip on every transaction (measured: a third of a consumer's
        # time). A connection broken by a database restart fails one call, which SQLAlchemy detects and
        # uses to invalidate the pool; relays and consumers retry, and the caller sees UNAVAILABLE once.
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800, **kwargs)
    else:
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets readers run beside the writer; busy_timeout waits for the write lock instead of failing.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(*_: Any) -> None:
        DB_POOL_IN_USE.inc()

    @event.listens_for(engine.sync_engine, "checkin")
    def _checkin(*_: Any) -> None:
        DB_POOL_IN_USE.dec()

    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded values after commit (the servicer reads them to build the answer)."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    """Raise when the database does not answer."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
