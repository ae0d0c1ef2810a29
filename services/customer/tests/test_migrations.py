"""The customer service's migrations on a real PostgreSQL: replicas starting together migrate once, the indexes
built ``CONCURRENTLY`` outside the migrations' transactions end valid and under their own names, and the way
down and up again works."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from crm_platform.db import create_engine, normalise_url
from crm_platform.migrations import migrate

pytestmark = pytest.mark.postgres


async def _indexes(url: str) -> dict[str, bool]:
    engine = create_engine(normalise_url(url))
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "JOIN pg_class t ON t.oid = i.indrelid WHERE t.relname = 'customers'"
                )
            )
            return {name: valid for name, valid in rows.all()}
    finally:
        await engine.dispose()


async def test_replicas_migrating_together_build_every_index_once_and_valid(postgres_url: str) -> None:
    engines = [create_engine(normalise_url(postgres_url)) for _ in range(3)]
    try:
        await asyncio.gather(*(migrate(engine, "crm_customer") for engine in engines))
        async with engines[0].connect() as conn:
            assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one() == "0011"
    finally:
        for engine in engines:
            await engine.dispose()
    indexes = await _indexes(postgres_url)
    assert all(indexes.values()), indexes  # no index left invalid by a concurrent build
    assert not [name for name in indexes if name.endswith("_building")]
    assert {"ix_customers_branch_name_pattern", "ix_customers_team_tier_created", "ix_customers_owner_created"} <= set(
        indexes
    )
    assert not {"ix_customers_owner", "ix_customers_team", "ix_customers_branch", "ix_customers_tier"} & set(indexes)
    assert len(indexes) == 22


async def test_the_online_index_migrations_go_down_and_up_again(postgres_url: str) -> None:
    from alembic import command

    from crm_platform.migrations import _config

    engine = create_engine(normalise_url(postgres_url))
    try:
        await migrate(engine, "crm_customer")
        before = await _indexes(postgres_url)

        def down(connection: object) -> None:
            command.downgrade(_config("crm_customer", connection), "0008")  # type: ignore[arg-type]

        async with engine.connect() as conn:
            await conn.run_sync(down)
        after_down = await _indexes(postgres_url)
        assert "ix_customers_owner" in after_down and "ix_customers_branch_name_pattern" not in after_down
        assert all(after_down.values())
        await migrate(engine, "crm_customer")
        assert await _indexes(postgres_url) == before
    finally:
        await engine.dispose()
