"""Outbox relay throughput from PostgreSQL to JetStream.

A scratch database gets the platform tables and ``EVENTS`` realistic outbox rows (``make_envelope`` of a
``CustomerCreated``, bulk-loaded with COPY, then ``VACUUM ANALYZE``). ``OutboxRelay.publish_batch`` is
then called in a loop — exactly what the running relay does while it has a backlog — until every row is
published; the stream's message count is checked afterwards. Each batch size runs on freshly loaded rows
and a fresh stream.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from bench.common import (
    NATS_URL,
    Row,
    Section,
    pg_dsn,
    progress,
    sample_envelope_bytes,
    scratch_database,
    scratch_stream,
)

EVENTS = 50_000
BATCH_SIZES = (500, 1000, 2000)
TARGET = 15_000.0
TIME_LIMIT = 60.0


async def _load(dsn: str, rows: list[tuple[str, str, bytes, dt.datetime, None]]) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE outbox")
        await conn.copy_records_to_table(
            "outbox", records=rows, columns=["id", "subject", "envelope", "created_at", "published_at"]
        )
        await conn.execute("VACUUM ANALYZE outbox")
    finally:
        await conn.close()


async def _run_once(database: str, batch_size: int, prepared: list[bytes]) -> dict[str, Any]:
    """Load the rows, publish them all with the platform's ``OutboxRelay``; return events/s."""
    from crm_platform.bus import Bus
    from crm_platform.db import create_engine, normalise_url
    from crm_platform.outbox import OutboxRelay

    async with scratch_stream() as stream:
        subject = stream.subject("customer.customer.created")
        now = dt.datetime.now(dt.UTC)
        run = stream.root[-12:]  # unique per run: the ids never collide with an earlier run's
        rows = [(f"{i:012d}-{run}", subject, data, now, None) for i, data in enumerate(prepared)]
        await _load(pg_dsn(database), rows)
        engine = create_engine(normalise_url(pg_dsn(database)))
        bus = Bus(NATS_URL, name="crm-bench-relay")
        await bus.connect(attempts=3)
        try:
            relay = OutboxRelay(engine, bus, batch_size=batch_size)
            published = 0
            batches = 0
            started = time.perf_counter()
            while published < EVENTS:
                count = await relay.publish_batch()
                if count == 0 or time.perf_counter() - started > TIME_LIMIT:
                    break
                published += count
                batches += 1
            elapsed = time.perf_counter() - started
            info = await bus.js.stream_info(stream.name)
        finally:
            await bus.close()
            await engine.dispose()
    if published != EVENTS or info.state.messages != EVENTS:
        raise RuntimeError(f"published {published}, stream holds {info.state.messages}, expected {EVENTS}")
    return {"batch_size": batch_size, "events_per_s": published / elapsed, "seconds": elapsed, "batches": batches}


async def measure() -> dict[str, Any]:
    """Relay throughput for each batch size."""
    from crm_platform.db import create_engine, normalise_url
    from crm_platform.schema import platform_metadata

    progress(f"  preparing {EVENTS:,} envelopes")
    # Envelopes are built once with the platform's make_envelope; ids are made unique per run (the
    # stream's duplicate window would otherwise drop a rerun's messages).
    prepared = [sample_envelope_bytes("crmbench.prefill.customer.customer.created", i)[1] for i in range(EVENTS)]
    results: dict[str, list[dict[str, Any]]] = {"platform": []}
    async with scratch_database() as database:
        engine = create_engine(normalise_url(pg_dsn(database)))
        async with engine.begin() as conn:
            await conn.run_sync(platform_metadata.create_all)
        await engine.dispose()
        for batch_size in BATCH_SIZES:
            result = await _run_once(database, batch_size, prepared)
            progress(f"  relay batch {batch_size}: {result['events_per_s']:,.0f} events/s ({result['seconds']:.2f} s)")
            results["platform"].append(result)
    return {"events": EVENTS, **results}


def section(figures: dict[str, Any], bare_async_rate: float) -> Section:
    """Rows per batch size, each as a ratio to the bare async publish throughput of the same run."""
    rows = []
    for result in figures["platform"]:
        rate = result["events_per_s"]
        rows.append(
            Row(
                f"OutboxRelay (platform), batch {result['batch_size']}",
                "PostgreSQL → JetStream",
                rate,
                "events/s",
                bare_label="bare async publish",
                bare_value=bare_async_rate,
                ratio=rate / bare_async_rate if bare_async_rate else float("nan"),
                target=f"≥ {TARGET:,.0f}/s",
                met=rate >= TARGET,
            )
        )
    detail = [
        f"Relay: {figures['events']:,} pending rows (COPY-loaded `make_envelope` bytes, ~"
        f"{len(sample_envelope_bytes('crmbench.x.customer.customer.created')[1])} B each) published by "
        "`OutboxRelay.publish_batch()` in a loop until none are pending; every run on fresh rows and a fresh "
        "file-backed stream, the stream's message count checked. Per batch size: "
        + "; ".join(
            f"{r['batch_size']}: {r['events_per_s']:,.0f}/s in {r['seconds']:.2f} s ({r['batches']} batches)"
            for r in figures["platform"]
        )
        + "."
    ]
    return Section("Outbox relay throughput", rows, detail)
