"""The asyncpg read path: the scope rule as SQL means exactly what the SQLAlchemy condition means, and the
read pool survives concurrency, cancelled calls and killed connections — on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools

import asyncpg
import pytest
from sqlalchemy import Column, MetaData, String, Table, insert, select
from sqlalchemy.engine import make_url

from crm_platform.auth_context import Identity, Scope
from crm_platform.db import create_engine, normalise_url
from crm_platform.fastread import ReadPool, asyncpg_dsn, read_pool_for, scope_sql
from crm_platform.scope import in_scope, scope_condition

pytestmark = pytest.mark.postgres

_meta = MetaData()
_records = Table(
    "records",
    _meta,
    Column("id", String(10), primary_key=True),
    Column("owner_id", String(10), nullable=False),
    Column("team_id", String(10), nullable=False),
    Column("branch_id", String(10), nullable=False),
    Column("region", String(10), nullable=False),
)
# Owners u1/u2 (team T1, branch B1, north), u3 (T2, B1, north), u4 (T3, B2, east), and an unowned pool record.
_ROWS = [
    ("r1", "u1", "T1", "B1", "north"),
    ("r2", "u2", "T1", "B1", "north"),
    ("r3", "u3", "T2", "B1", "north"),
    ("r4", "u4", "T3", "B2", "east"),
    ("r5", "", "", "B1", "north"),
]


def _identities() -> list[Identity]:
    people = [("u1", "T1", "B1", "north"), ("u4", "T3", "B2", "east"), ("", "", "", ""), ("u9", "", "B1", "")]
    return [
        Identity(user, scope=scope, team_id=team, branch_id=branch, region=region)
        for (user, team, branch, region), scope in itertools.product(people, list(Scope))
    ]


async def test_scope_sql_selects_what_scope_condition_selects(postgres_url: str) -> None:
    engine = create_engine(normalise_url(postgres_url))
    async with engine.begin() as conn:
        await conn.run_sync(_meta.create_all)
        await conn.execute(insert(_records), [dict(zip(_records.c.keys(), row, strict=True)) for row in _ROWS])
    dsn = asyncpg_dsn(make_url(postgres_url))
    assert dsn is not None
    direct = await asyncpg.connect(dsn)
    try:
        for who in _identities():
            c = _records.c
            condition = scope_condition(who, owner=c.owner_id, team=c.team_id, branch=c.branch_id, region=c.region)
            async with engine.connect() as conn:
                expected = set((await conn.execute(select(c.id).where(condition))).scalars())
            params: list[object] = []
            sql = scope_sql(who, params, owner="owner_id", team="team_id", branch="branch_id", region="region")
            got = {r["id"] for r in await direct.fetch(f"SELECT id FROM records WHERE {sql}", *params)}
            assert got == expected, (who, sql, params)
            by_rule = {r[0] for r in _ROWS if in_scope(who, owner=r[1], team=r[2], branch=r[3], region=r[4])}
            assert got == by_rule, who
    finally:
        await direct.close()
        await engine.dispose()


def test_only_postgresql_gets_a_read_pool(tmp_path: object) -> None:
    sqlite = create_engine(make_url("sqlite+aiosqlite:///:memory:"))
    assert read_pool_for(sqlite) is None
    postgres = create_engine(make_url("postgresql+asyncpg://user:secret@db.example:5432/crm_customer"))
    pool = read_pool_for(postgres)
    assert pool is not None
    assert asyncpg_dsn(postgres.url) == "postgresql://user:secret@db.example:5432/crm_customer"


async def test_read_pool_serves_more_calls_than_connections(postgres_url: str) -> None:
    dsn = asyncpg_dsn(make_url(postgres_url))
    assert dsn is not None
    pool = ReadPool(dsn, size=2)
    task = asyncio.create_task(pool.serve())
    try:
        rows = await asyncio.gather(*(pool.fetchrow("SELECT $1::int AS n, pg_sleep(0.01)", [i]) for i in range(20)))
        assert [r["n"] for r in rows] == list(range(20))
        assert await pool.fetchrow("SELECT 1 WHERE false", []) is None
        with pytest.raises(asyncpg.UndefinedTableError):  # a query error leaves the connection in service
            await pool.fetchrow("SELECT * FROM no_such_table", [])
        assert len(pool._idle) == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert pool._idle == []


async def test_read_pool_replaces_cancelled_and_killed_connections(postgres_url: str) -> None:
    dsn = asyncpg_dsn(make_url(postgres_url))
    assert dsn is not None
    pool = ReadPool(dsn, size=2, name="crm-fastread-test")
    await pool.open()
    admin = await asyncpg.connect(dsn)
    try:
        # Both connections know the statement's types (asyncpg introspects unknown ones on first use).
        await asyncio.gather(*(pool.fetchrow("SELECT pg_sleep(0.05)", []) for _ in range(2)))
        # A call that runs out of time mid-statement: its connection is not trusted again.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await pool.fetchrow("SELECT pg_sleep(5)", [])
        # The database kills every pool connection (e.g. a restart or an administrator).
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'crm-fastread-test' AND pid <> pg_backend_pid()"
        )
        answered = 0
        for _ in range(100):
            try:
                row = await pool.fetchrow("SELECT 42 AS n", [])
            except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError):
                await asyncio.sleep(0.05)  # a dead connection fails one call and is replaced
                continue
            assert row["n"] == 42
            answered += 1
            if answered == 5:
                break
        assert answered == 5
    finally:
        await admin.close()
        await pool.close()
