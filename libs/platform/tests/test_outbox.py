"""The transactional outbox and its relay against a real database (SQLite, PostgreSQL) and a real NATS."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update

from crm.common.v1 import paging_pb2
from crm_platform.bus import Bus
from crm_platform.ids import new_id
from crm_platform.outbox import (
    BUNDLE_SUBJECT,
    MAX_BUNDLE_EVENTS,
    Outbox,
    OutboxRelay,
    PendingEvent,
    bundle_rows,
    unbundled,
    utcnow,
)
from crm_platform.schema import outbox as outbox_table
from crm_testing.nats_server import NatsServer
from crm_testing.outbox_env import OutboxEnv as Env
from crm_testing.outbox_env import notes
from crm_testing.streams import connect_bus, stream_bus, stream_envelopes


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


def _crashing_relay(env: Env, bus: Bus, **options: Any) -> OutboxRelay:
    """A relay whose process dies after publishing a batch and before marking it sent."""
    relay = OutboxRelay(env.engine, bus, **options)

    async def crash_after_publish(events: list[tuple[str, str, bytes]]) -> None:
        await OutboxRelay._publish(relay, events)  # the events reach JetStream …
        raise ConnectionError("process killed before marking the batch sent")  # … but the mark is lost

    relay._publish = crash_after_publish  # type: ignore[method-assign]
    return relay


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
    async with stream_bus(nats_url, env.stream) as bus:
        relay = OutboxRelay(env.engine, bus, poll_interval=30.0)  # a long poll: the wake-up comes from the commit
        outbox = Outbox("test", notify=relay.wake)
        relay.start()
        try:
            ids = await _write(env, outbox, 25)
            published = await _stream_ids(bus, env, expected=25, timeout=5)
            assert sorted(published) == sorted(ids)
            assert await _unmarked_after(env, timeout=2) == 0
        finally:
            await relay.stop()


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
    async with stream_bus(nats_url, env.stream) as bus:
        outbox = Outbox("test")
        ids = await _write(env, outbox, 30)
        crashing = _crashing_relay(env, bus, batch_size=20)
        with pytest.raises(ConnectionError):
            await crashing.publish_batch()
        assert await env.count(outbox_table, outbox_table.c.published_at.is_(None)) == 30
        restarted = OutboxRelay(env.engine, bus, batch_size=20)
        while await restarted.publish_batch():
            pass
        published = await _stream_ids(bus, env, expected=30)
        assert sorted(published) == sorted(ids)  # JetStream dropped the 20 re-published duplicates


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


async def _write_with_bundles(env: Env, sizes: list[int]) -> tuple[list[str], list[PendingEvent]]:
    """Commit, in one transaction: an event in a row of its own, then a bundle of each of ``sizes`` events, then
    another event in a row of its own. Return every event id, and the outbox rows of the bundles."""
    outbox = Outbox("test")
    ids: list[str] = []
    bundles: list[PendingEvent] = []
    async with env.sessions() as session, session.begin():

        async def single() -> None:
            ids.append(
                await outbox.add(
                    session, f"{env.root}.note.created", paging_pb2.PageInfo(), subject_id=new_id(), actor="tester"
                )
            )

        await single()
        for size in sizes:
            events = [
                outbox.prepare(f"{env.root}.note.created", paging_pb2.PageInfo(), subject_id=new_id(), actor="tester")
                for _ in range(size)
            ]
            ids.extend(e.id for e in events)
            for row in bundle_rows(events):
                bundles.append(row)
                await session.execute(insert(outbox_table).values(**row._asdict(), created_at=utcnow()))
        await single()
    return ids, bundles


async def test_a_bundle_is_published_event_by_event_and_marked_once(outbox_env: Env, nats_url: str) -> None:
    env = outbox_env
    async with stream_bus(nats_url, env.stream) as bus:
        ids, bundles = await _write_with_bundles(env, [MAX_BUNDLE_EVENTS, 5])
        assert len(bundles) == 2 and await env.count(outbox_table) == 4
        relay = OutboxRelay(env.engine, bus, batch_size=MAX_BUNDLE_EVENTS)
        # Batches of at most MAX_BUNDLE_EVENTS events, a bundle counted as the most it may hold, always whole:
        # the first row alone (the big bundle would make it 1,001), the big bundle, the small one, the last row.
        assert [await relay.publish_batch() for _ in range(5)] == [1, MAX_BUNDLE_EVENTS, 5, 1, 0]
        published = await _stream_ids(bus, env, expected=len(ids), timeout=20)
        assert published == ids  # each event a message of its own, with its id, in the order written
        assert await env.count(outbox_table, outbox_table.c.published_at.is_(None)) == 0


async def test_a_bundle_handed_over_is_published_from_memory(outbox_env: Env, nats_url: str) -> None:
    env = outbox_env
    async with stream_bus(nats_url, env.stream) as bus:
        relay = OutboxRelay(env.engine, bus, poll_interval=30.0)  # a long poll: the publish comes from the hand-over
        relay.start()
        try:
            ids, bundles = await _write_with_bundles(env, [300])
            Outbox("test", notify=relay.wake).handed_over(bundles)
            published = await _stream_ids(bus, env, expected=300, timeout=5)
            assert published == ids[1:-1]
            assert await _unmarked_after(env, timeout=2) == 2  # only the two rows of their own, never handed over
        finally:
            await relay.stop()


async def test_a_bundle_republished_after_a_crash_reaches_the_stream_once(outbox_env: Env, nats_url: str) -> None:
    env = outbox_env
    async with stream_bus(nats_url, env.stream) as bus:
        ids, _ = await _write_with_bundles(env, [40])
        crashing = _crashing_relay(env, bus)
        with pytest.raises(ConnectionError):
            await crashing.publish_batch()
        assert await env.count(outbox_table, outbox_table.c.published_at.is_(None)) == 3
        restarted = OutboxRelay(env.engine, bus)
        while await restarted.publish_batch():
            pass
        assert sorted(await _stream_ids(bus, env, expected=len(ids))) == sorted(ids)  # the copies were dropped
        assert await env.count(outbox_table, outbox_table.c.published_at.is_(None)) == 0


def test_bundles_hold_at_most_their_maximum_and_open_in_order() -> None:
    outbox = Outbox("test")
    events = [
        outbox.prepare("crm.t.note.created", paging_pb2.PageInfo(), subject_id=str(i), actor="a") for i in range(2001)
    ]
    rows = bundle_rows(events)
    assert [r.subject for r in rows] == [BUNDLE_SUBJECT] * 3
    single = ("id-1", "crm.t.note.created", b"envelope")
    assert unbundled([single, *rows, single]) == [single, *[tuple(e) for e in events], single]
    assert bundle_rows([]) == []
