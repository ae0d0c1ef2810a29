"""Read-model tables and queries. Rows change only through event handlers; reads apply the caller's scope."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, MetaData, String, Table, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_reporting.domain import BranchCount, CountScope

metadata = MetaData()

branch_customer_counts = Table(
    "branch_customer_counts",
    metadata,
    Column("branch_id", String(64), primary_key=True),
    Column("region", String(64), nullable=False),
    Column("customers", BigInteger, nullable=False),
)


async def count_customer(session: AsyncSession, *, branch_id: str, region: str) -> None:
    """Add one customer to its branch's count inside the handler's transaction (with its inbox row)."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(branch_customer_counts).values(branch_id=branch_id, region=region, customers=1)
    # One atomic upsert, so replicas handling events of the same branch at once never lose an increment.
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["branch_id"],
            set_={"customers": branch_customer_counts.c.customers + 1, "region": stmt.excluded.region},
        )
    )


async def uncount_customer(session: AsyncSession, *, branch_id: str) -> None:
    """Take one customer off its branch's count (a merged duplicate, a rolled-back import's customer); never
    below zero."""
    c = branch_customer_counts.c
    await session.execute(
        update(branch_customer_counts)
        .where(c.branch_id == branch_id, c.customers > 0)
        .values(customers=c.customers - 1)
    )


class ReportStore:
    """Answers reports from the read models."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def customer_counts(self, scope: CountScope) -> list[BranchCount]:
        """The branches inside ``scope`` with their customer counts, ordered by branch id."""
        c = branch_customer_counts.c
        query = select(c.branch_id, c.region, c.customers).order_by(c.branch_id)
        if scope.region is not None:
            query = query.where(c.region == scope.region)
        if scope.branch_id is not None:
            query = query.where(c.branch_id == scope.branch_id)
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return [BranchCount(r.branch_id, r.region, r.customers) for r in rows]
