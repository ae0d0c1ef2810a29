"""Bare limit (d): commits per second of one PostgreSQL connection (asyncpg, autocommit INSERT loop).

Each iteration is one prepared ``INSERT`` in autocommit mode, so one round trip and one WAL flush per
commit: the floor every transaction of ours (outbox write, inbox record) stands on.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import Row, Section, pg_dsn, progress, scratch_database

WARMUP = 0.5
DURATION = 5.0
REFERENCE = 5000.0


async def measure() -> dict[str, Any]:
    """Run the commit loop in a scratch database; return commits/s and the server's version."""
    import asyncpg

    async with scratch_database() as database:
        conn = await asyncpg.connect(pg_dsn(database))
        try:
            version = await conn.fetchval("SHOW server_version")
            synchronous_commit = await conn.fetchval("SHOW synchronous_commit")
            await conn.execute("CREATE TABLE bench_commit (id bigint PRIMARY KEY, note text NOT NULL)")
            insert = await conn.prepare("INSERT INTO bench_commit (id, note) VALUES ($1, $2)")
            i = 0
            end_warmup = time.perf_counter() + WARMUP
            while time.perf_counter() < end_warmup:
                i += 1
                await insert.fetch(i, "warm-up")
            started = time.perf_counter()
            end = started + DURATION
            counted = 0
            while time.perf_counter() < end:
                i += 1
                counted += 1
                await insert.fetch(i, "bench")
            rate = counted / (time.perf_counter() - started)
        finally:
            await conn.close()
    progress(f"  PostgreSQL one connection {rate:,.0f} commits/s")
    return {"commits_per_s": rate, "commits": counted, "server_version": version, "sync": synchronous_commit}


def section(figures: dict[str, Any]) -> Section:
    """The bare-PostgreSQL row, compared with the reference figure of issue #2."""
    rate = figures["commits_per_s"]
    row = Row(
        "Bare PostgreSQL commit loop",
        "one connection",
        rate,
        "commits/s",
        bare_label="issue #2 reference",
        bare_value=REFERENCE,
        ratio=rate / REFERENCE,
    )
    detail = [
        f"PostgreSQL: one asyncpg connection, prepared autocommit `INSERT` for {DURATION:.0f} s after "
        f"{WARMUP} s warm-up (synchronous_commit={figures['sync']}): {figures['commits']:,} commits = "
        f"{rate:,.0f} commits/s."
    ]
    return Section("Bare PostgreSQL", [row], detail)
