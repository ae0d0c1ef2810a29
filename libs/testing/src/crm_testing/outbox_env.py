"""A database with the platform tables plus a ``notes`` table, and a uniquely named stream: the set-up of
every outbox and inbox test (fixture ``outbox_env``, on SQLite and PostgreSQL in turn)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, MetaData, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from crm_platform.bus import StreamSpec
from crm_platform.db import create_engine, normalise_url, session_factory
from crm_platform.schema import platform_metadata

notes_metadata = MetaData()
notes = Table("notes", notes_metadata, Column("id", String(36), primary_key=True), Column("text", String(200)))


@dataclass
class OutboxEnv:
    """A database and a stream of one test."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    stream: StreamSpec
    root: str

    async def count(self, table: Any, *conditions: Any) -> int:
        """Rows of ``table`` matching ``conditions``."""
        async with self.engine.connect() as conn:
            query = select(func.count()).select_from(table).where(*conditions)
            return int((await conn.execute(query)).scalar_one())


async def make_outbox_env(url: str, stream: StreamSpec, root: str) -> OutboxEnv:
    """Create the tables on ``url`` and return the environment."""
    engine = create_engine(normalise_url(url))
    async with engine.begin() as conn:
        await conn.run_sync(platform_metadata.create_all)
        await conn.run_sync(notes_metadata.create_all)
    return OutboxEnv(engine, session_factory(engine), stream, root)
