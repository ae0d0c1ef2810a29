"""Chaos: SIGKILL the outbox relay in the middle of publishing, restart it, and every event still reaches
the consumer exactly once (JetStream de-duplication by Nats-Msg-Id, then the consumer's inbox)."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import insert

from crm.common.v1 import paging_pb2
from crm_platform.bus import StreamSpec
from crm_platform.inbox import ConsumerRunner, Event, Subscription
from crm_platform.outbox import Outbox, OutboxRelay, make_envelope, utcnow
from crm_platform.schema import inbox as inbox_table
from crm_platform.schema import outbox as outbox_table
from crm_testing.outbox_env import make_outbox_env, notes
from crm_testing.plugin import unique_streams
from crm_testing.streams import connect_bus, delete_stream

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.slow]

EVENTS = 2000


async def test_relay_killed_mid_batch_publishes_every_event_exactly_once(postgres_url: str, nats_url: str) -> None:
    name, root = unique_streams("CHAOS")
    env = await make_outbox_env(postgres_url, StreamSpec(name, (f"{root}.>",)), root)
    subject = f"{root}.note.created"
    rows = []
    for i in range(EVENTS):
        envelope = make_envelope(subject, "chaos", paging_pb2.PageInfo(), subject_id=f"n{i}", actor="chaos")
        rows.append(
            {"id": envelope.id, "subject": subject, "envelope": envelope.SerializeToString(), "created_at": utcnow()}
        )
    async with env.engine.begin() as conn:
        await conn.execute(insert(outbox_table), rows)

    bus = await connect_bus(nats_url, env.stream)
    try:
        relay = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("relay_process.py")),
            postgres_url,
            nats_url,
            name,
            root,
            stdout=asyncio.subprocess.DEVNULL,
        )
        # Kill it once it is well into the work, wherever it is: mid-publish, mid-mark, between batches.
        for _ in range(600):
            info = await bus.js.stream_info(name)
            if info.state.messages >= EVENTS // 3:
                break
            await asyncio.sleep(0.01)
        relay.send_signal(signal.SIGKILL)
        await relay.wait()
        pending = await env.count(outbox_table, outbox_table.c.published_at.is_(None))
        assert 0 < pending < EVENTS, "the kill must land while events are still unpublished"

        restarted = OutboxRelay(env.engine, bus, batch_size=500)
        await restarted.publish_pending()
        assert (await bus.js.stream_info(name)).state.messages == EVENTS  # re-published ones were dropped

        # A consumer applies each event once, even when copies arrive past JetStream's window.
        async def on_note(session: object, event: Event) -> None:
            await session.execute(insert(notes).values(id=event.subject_id, text="x"))  # type: ignore[attr-defined]

        durable = f"chaos-{uuid.uuid4().hex[:8]}"
        for row in rows[:50]:
            await bus.js.publish(subject, row["envelope"], headers={"Nats-Msg-Id": f"{row['id']}-late-copy"})
        runner = ConsumerRunner(
            bus,
            env.sessions,
            Outbox("chaos"),
            [Subscription(durable, name, f"{root}.>", {subject: on_note})],
            batch=256,
        )
        await runner.start()
        try:
            for _ in range(1200):
                if await env.count(inbox_table, inbox_table.c.consumer == durable) >= EVENTS:
                    break
                await asyncio.sleep(0.05)
            info = await bus.js.consumer_info(name, durable)
            for _ in range(200):
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    break
                await asyncio.sleep(0.05)
                info = await bus.js.consumer_info(name, durable)
        finally:
            await runner.stop()
        assert await env.count(notes) == EVENTS
        assert await env.count(inbox_table, inbox_table.c.consumer == durable) == EVENTS
    finally:
        await bus.close()
        await delete_stream(nats_url, env.stream)
        await env.engine.dispose()
