"""The transactional outbox and its relay against a real database (SQLite, PostgreSQL) and a real NATS."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import insert, update

from crm.common.v1 import paging_pb2
from crm_platform.bus import Bus
from crm_platform.ids import new_id
from crm_platform.outbox import Outbox, OutboxRelay
from crm_platform.schema import outbox as outbox_table
from crm_testing.nats_server import NatsServer
from crm_testing.outbox_env import OutboxEnv as Env
from crm_testing.outbox_env import notes
from crm_testing.streams import connect_bus, delete_stream, stream_envelopes


async def _write(env: Env, outbox: Outbox, n: int, *, fail: bool = False) -> list[str]:
    """Write ``n`` notes, each with its event, in one transaction (rolled back when ``fail``)."""
    ids = []
    async with env.sessions() as session, session.begin():
        for i in range(n):
            note_id = new_id()
            await session.execute(insert(notes).values(id=note_id, text=f"note {i}"))
            ids.append(
                await outbox.add(
                    session,
                    f"{env.root}.note.created",
                    paging_pb2.PageInfo(next_page_token=note_id),
                    subject_id=note_id,
                    actor="tester",
                )
            )
        if fail:
            raise RuntimeError("business rule failed after the event was added")
    return ids


async def _stream_ids(bus: Bus, env: Env, expected: int, timeout: float = 10.0) -> list[str]:
    return [e.id for e in await stream_envelopes(bus, env.stream, expected, timeout)]


async def _unmarked_after(env: Env, timeout: float) -> int:
    """Rows not marked published, once none are left or ``timeout`` passed (events published from memory are
    marked in the background, a few tens of milliseconds after their acknowledgement)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        unmarked = await env.count(outbox_table, outbox_table.c.published_at.is_(None))
        if not unmarked or loop.time() > deadline:
            return unmarked
        await asyncio.sleep(0.05)


async def test_change_and_event_commit_together_or_not_at_all(outbox_env: Env) -> None:
    env = outbox_env
    outbox = Outbox("test")
    await _write(env, outbox, 3)
    with pytest.raises(RuntimeError):
        await _write(env, outbox, 2, fail=True)
    assert await env.count(notes) == 3
    assert await env.count(outbox_table) == 3


async def test_relay_publishes_on_commit_with_msg_id(outbox_env: Env, nats_url: str) -> None:
    env = outbox_env
    bus = await connect_bus(nats_url, env.stream)
    relay = OutboxRelay(env.engine, bus, poll_interval=30.0)  # a long poll proves the wake-up comes from the commit
    outbox = Outbox("test", notify=relay.wake)
    relay.start()
    try:
        ids = await _write(env, outbox, 25)
        published = await _stream_ids(bus, env, expected=25, timeout=5)
        assert sorted(published) == sorted(ids)
        assert await _unmarked_after(env, timeout=2) == 0
    finally:
        await relay.stop()
        await bus.close()
        await delete_stream(nats_url, env.stream)


async def test_changes_commit_while_nats_is_down_and_publish_after_it_returns(outbox_env: Env, tmp_path: Path) -> None:
    env = outbox_env
    server = NatsServer(tmp_path / "nats").start()
    bus = await connect_bus(server.url, env.stream)
    relay = OutboxRelay(env.engine, bus, poll_interval=0.2, publish_timeout=1.0)
    outbox = Outbox("test", notify=relay.wake)
    relay.start()
    try:
        server.stop()
        ids = await _write(env, outbox, 40)  # commits although the broker is gone
        assert await env.count(notes) == 40
        await asyncio.sleep(1.0)
        assert await env.count(outbox_table, outbox_table.c.published_at.is_(None)) == 40
        server.start()  # same port, same store
        published = await _stream_ids(bus, env, expected=40, timeout=20)
        assert sorted(published) == sorted(ids)
        assert await _unmarked_after(env, timeout=10) == 0
    finally:
        await relay.stop()
        await bus.close()
        server.stop()


async def test_relay_crash_between_publish_and_mark_publishes_each_event_once(outbox_env: Env, nats_url: str) -> None:
    env = outbox_env
    bus = await connect_bus(nats_url, env.stream)
    outbox = Outbox("test")
    ids = await _write(env, outbox, 30)
    crashing = OutboxRelay(env.engine, bus, batch_size=20)

    async def crash_after_publish(rows: list[object]) -> None:
        await OutboxRelay._publish(crashing, rows)  # the events reach JetStream …
        raise ConnectionError("process killed before marking the batch sent")  # … but the mark is lost

    crashing._publish = crash_after_publish  # type: ignore[method-assign]
    try:
        with pytest.raises(ConnectionError):
            await crashing.publish_batch()
        assert await env.count(outbox_table, outbox_table.c.published_at.is_(None)) == 30
        restarted = OutboxRelay(env.engine, bus, batch_size=20)
        while await restarted.publish_batch():
            pass
        published = await _stream_ids(bus, env, expected=30)
        assert sorted(published) == sorted(ids)  # JetStream dropped the 20 re-published duplicates
    finally:
        await bus.close()
        await delete_stream(nats_url, env.stream)


async def test_old_published_rows_are_purged(outbox_env: Env) -> None:
    env = outbox_env
    import datetime as dt

    outbox = Outbox("test")
    await _write(env, outbox, 2)
    async with env.engine.begin() as conn:
        await conn.execute(update(outbox_table).values(published_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)))
    relay = OutboxRelay(env.engine, bus=None)  # type: ignore[arg-type]
    await relay._housekeeping()
    assert await env.count(outbox_table) == 0
