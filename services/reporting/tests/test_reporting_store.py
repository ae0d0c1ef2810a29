"""The read model on SQLite and PostgreSQL: the atomic per-branch increment and the scope filters."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from crm_platform.db import create_engine, normalise_url, session_factory
from crm_platform.migrations import migrate
from crm_reporting.domain import BranchCount, CountScope
from crm_reporting.store import ReportStore, count_customer


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[ReportStore]:
    engine = create_engine(normalise_url(db_url))
    await migrate(engine, "crm_reporting")
    yield ReportStore(session_factory(engine))
    await engine.dispose()


async def test_counts_per_branch_and_scope_filters(store: ReportStore) -> None:
    for branch_id, region in [("BJ002", "north"), ("BJ001", "north"), ("BJ001", "north"), ("SH001", "east")]:
        async with store._sessions() as session, session.begin():
            await count_customer(session, branch_id=branch_id, region=region)

    everything = await store.customer_counts(CountScope())
    assert everything == [
        BranchCount("BJ001", "north", 2),
        BranchCount("BJ002", "north", 1),
        BranchCount("SH001", "east", 1),
    ]
    assert await store.customer_counts(CountScope(region="north")) == everything[:2]
    assert await store.customer_counts(CountScope(branch_id="SH001")) == everything[2:]
    assert await store.customer_counts(CountScope(region="west")) == []
