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
            assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one() == "0017"
            collations = await conn.execute(
                text(
                    "SELECT a.attname, coalesce(l.collname, '') FROM pg_attribute a "
                    "LEFT JOIN pg_collation l ON l.oid = a.attcollation "
                    "WHERE a.attrelid = 'customers'::regclass AND a.attname IN ('name', 'customer_no', 'branch_id')"
                )
            )
            # byte order where it saves comparisons (names, hashes); the scope columns keep the database's
            # (no gain measured)
            assert dict(collations.all()) == {"name": "C", "customer_no": "C", "branch_id": "default"}
            history_key = await conn.execute(
                text(
                    "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                    "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                    "WHERE i.indrelid = 'customer_history'::regclass AND i.indisprimary ORDER BY a.attnum"
                )
            )
            assert sorted(name for (name,) in history_key.all()) == ["customer_id", "id"]
            history_indexes = await conn.execute(
                text("SELECT count(*) FROM pg_index WHERE indrelid = 'customer_history'::regclass")
            )
            assert history_indexes.scalar_one() == 1  # the key serves every read of a customer's history
    finally:
        for engine in engines:
            await engine.dispose()
    indexes = await _indexes(postgres_url)
    assert all(indexes.values()), indexes  # no index left invalid by a concurrent build
    assert not [name for name in indexes if name.endswith("_building")]
    assert {"ix_customers_branch_name", "ix_customers_team_created", "ix_customers_owner_created"} <= set(indexes)
    gone = {"ix_customers_owner", "ix_customers_tier", "ix_customers_name_pattern", "ix_customers_team_tier_created"}
    assert not gone & set(indexes)
    assert len(indexes) == 17


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


async def _migrated(url: str) -> None:
    engine = create_engine(normalise_url(url))
    try:
        await migrate(engine, "crm_customer")
    finally:
        await engine.dispose()


async def _plan(
    url: str,
    query: str,
    types: str = "varchar[]",
    args: str = "'{a}'",
    *,
    drops: tuple[str, ...] = (),
    generic: bool = False,
    seqscan: bool = False,
) -> str:
    """PostgreSQL's plan for ``query`` prepared with parameters of ``types`` and explained for ``args``, once
    ``drops`` (DDL statements) ran: with sequential scans priced out unless ``seqscan``, which other index it
    would take instead; the generic plan (what a prepared statement settles on) when ``generic``. The drops are
    rolled back."""
    engine = create_engine(normalise_url(url))
    try:
        async with engine.connect() as conn:
            for drop in drops:
                await conn.execute(text(drop))
            if generic:
                await conn.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
            if not seqscan:
                await conn.execute(text("SET LOCAL enable_seqscan = off"))
            await conn.execute(text(f"PREPARE q({types}) AS {query}"))
            plan = "\n".join((await conn.execute(text(f"EXPLAIN EXECUTE q({args})"))).scalars())
            await conn.rollback()
            return plan
    finally:
        await engine.dispose()


@pytest.mark.parametrize("column", ["id_number_hash", "mobile_hash", "credit_code"])
async def test_a_duplicate_look_up_can_use_its_own_unique_index_only(postgres_url: str, column: str) -> None:
    # Each duplicate index once held every live customer (partial on erased_at IS NULL alone): without
    # statistics, the create's cached plan read them all through another column's index and filtered.
    await _migrated(postgres_url)
    plan = await _plan(
        postgres_url,
        f"SELECT id FROM customers WHERE {column} = ANY($1) AND erased_at IS NULL LIMIT 1",
        drops=(f"DROP INDEX uq_customers_{column}",),
    )
    assert "uq_customers_" not in plan, plan
    assert "Seq Scan on customers" in plan, plan


async def test_the_outbox_mark_cannot_walk_the_sent_rows_index(postgres_url: str) -> None:
    from crm_platform.outbox import _MARK_SQL

    await _migrated(postgres_url)
    mark = _MARK_SQL.replace("$2", "now()")  # the statement as the relay runs it, its time a constant here
    # Without the index of unsent rows and the primary key, an index on published_at over every row was the
    # one left that matched "published_at IS NULL".
    plan = await _plan(
        postgres_url, mark, drops=("DROP INDEX ix_outbox_pending", "ALTER TABLE outbox DROP CONSTRAINT outbox_pkey")
    )
    assert "ix_outbox_published_at" not in plan, plan


async def test_the_idempotency_look_up_uses_the_partial_request_id_index(postgres_url: str) -> None:
    # Only single creates carry a request id: the unique index holds those alone (an imported customer adds no NULL
    # entry), and "request_id = $1" implies its predicate.
    await _migrated(postgres_url)
    plan = await _plan(postgres_url, "SELECT id FROM customers WHERE request_id = ($1)[1] LIMIT 1")
    assert "uq_customers_request_id" in plan, plan
    indexes = await _indexes(postgres_url)
    assert "customers_request_id_key" not in indexes


@pytest.mark.parametrize(
    ("table", "column", "by_job", "live", "index"),
    [
        ("customers", "id_number_hash", False, True, "uq_customers_id_number_hash"),
        ("customers", "mobile_hash", False, True, "uq_customers_mobile_hash"),
        ("customers", "credit_code", False, True, "uq_customers_credit_code"),
        ("customers", "customer_no", False, False, "customers_customer_no_key"),
        ("customer_import_rows", "customer_id", True, False, "ix_customer_import_rows_customer"),
        ("customer_import_keys", "key", True, False, "customer_import_keys_pkey"),
    ],
)
async def test_an_imports_look_ups_probe_their_index_without_statistics(
    postgres_url: str, table: str, column: str, by_job: bool, live: bool, index: str
) -> None:
    # The import no longer analyses the tables it grows: each look-up must keep an index plan on tables never
    # analysed, as a generic plan (what a prepared statement settles on) on empty tables — the worst case.
    from crm_customer.store.imports import _probe_sql

    await _migrated(postgres_url)
    sql = _probe_sql(table, column, (column,), by_job, live)
    params, args = ("varchar, varchar[]", "'j', '{a,b}'") if by_job else ("varchar[]", "'{a,b}'")
    plan = await _plan(postgres_url, sql, params, args, generic=True, seqscan=True)
    assert f"using {index} on {table}" in plan, plan
    assert "Seq Scan" not in plan, plan


@pytest.mark.parametrize(("scope", "index"), [("branch", "ix_customers_branch_name"), ("all", "ix_customers_name")])
async def test_a_name_prefix_search_is_a_range_of_a_plain_name_index(postgres_url: str, scope: str, index: str) -> None:
    # Names compare in byte order (0015): the plain name indexes serve "starts with" as a range, as the two
    # text_pattern_ops indexes did before, for the generic plan of the prepared statement too.
    from crm_customer.store import CustomerFilter
    from crm_customer.store.fastread import list_conditions
    from crm_platform.auth_context import Identity, Scope
    from crm_platform.pii import Keyring, generate_master_keys

    await _migrated(postgres_url)
    who = Identity("u-head", scope=Scope.BRANCH if scope == "branch" else Scope.ALL, branch_id="BJ001")
    params: list[object] = []
    keyring = Keyring.from_spec(generate_master_keys("k1"), "k1")
    where = " AND ".join(list_conditions(keyring, who, CustomerFilter(name_prefix="张"), params))
    types = ", ".join("varchar" for _ in params)
    args = ", ".join(f"'{value}'" for value in params)
    sql = f"SELECT c.id FROM customers c WHERE {where} ORDER BY c.name, c.id LIMIT 50"
    plan = await _plan(postgres_url, sql, types, args, generic=True)
    assert f"using {index} on customers" in plan, plan
    condition = next(line for line in plan.splitlines() if "Index Cond" in line)
    assert "(name)::text >= " in condition and "(name)::text < " in condition, plan  # the range, not a filter
