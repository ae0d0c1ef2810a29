"""Outbox relay throughput from PostgreSQL to JetStream.

A scratch database gets the platform tables and ``EVENTS`` realistic outbox rows (``make_envelope`` of a
``CustomerCreated``, bulk-loaded with COPY, then ``VACUUM ANALYZE``). ``OutboxRelay.publish_pending`` then
publishes them — exactly what the running relay does with a backlog (batch after batch, two in flight) —
and the stream's message count is checked afterwards. Each batch size runs on freshly loaded rows and a
fresh stream. Right before each run, the same messages go through a bare ``js.publish_async`` loop on a fresh
stream too: on a shared machine the bare limit moves from minute to minute, and this adjacent figure is the
fairest one to compare with.
"""

from __future__ import annotations

import asyncio
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


async def _bare_rate(prepared: list[bytes]) -> float:
    """Messages/s of a bare ``js.publish_async`` loop (same payloads and headers), every ack awaited."""
    import asyncio

    import nats

    async with scratch_stream() as stream:
        subject = stream.subject("customer.customer.created")
        nc = await nats.connect(NATS_URL, name="crm-bench-relay-bare")
        try:
            js = nc.jetstream(timeout=5)
            started = time.perf_counter()
            futures = []
            for i, data in enumerate(prepared):
                headers = {"Nats-Msg-Id": f"bare-{i}-{stream.root}", "Crm-Event-Type": subject}
                futures.append(await js.publish_async(subject, data, headers=headers))
            await asyncio.gather(*futures)
            return len(prepared) / (time.perf_counter() - started)
        finally:
            await nc.close()


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
            started = time.perf_counter()
            published = await asyncio.wait_for(relay.publish_pending(), timeout=TIME_LIMIT)
            elapsed = time.perf_counter() - started
            batches = -(-published // batch_size)
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
            bare = await _bare_rate(prepared)
            result = await _run_once(database, batch_size, prepared)
            result["adjacent_bare"] = bare
            progress(
                f"  relay batch {batch_size}: {result['events_per_s']:,.0f} events/s ({result['seconds']:.2f} s); "
                f"bare publish_async just before: {bare:,.0f} msgs/s"
            )
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
        "`OutboxRelay.publish_pending()` (claim with `FOR UPDATE SKIP LOCKED`, publish, mark `published_at` "
        "and commit per batch, through asyncpg; two batches in flight); every run on fresh rows and a fresh "
        "file-backed stream, the stream's message count checked. Per batch size: "
        + "; ".join(
            f"{r['batch_size']}: {r['events_per_s']:,.0f}/s in {r['seconds']:.2f} s ({r['batches']} batches)"
            + (
                f", against a bare `js.publish_async` loop of the same messages run just before it: "
                f"{r['adjacent_bare']:,.0f} msgs/s (ratio {r['events_per_s'] / r['adjacent_bare']:.2f})"
                if r.get("adjacent_bare")
                else ""
            )
            for r in figures["platform"]
        )
        + ". The relay can pass the bare figure: it does not use `publish_async` (a future, a semaphore wait and a "
        "parsed `PubAck` per message) but `Bus.publish_batch`, one future per batch and an acknowledgement "
        "counted without parsing it."
    ]
    return Section("Outbox relay throughput", rows, detail)
