"""The event hot paths: batch publish with counted acknowledgements, the outbox insert through the driver,
pipelined relay batches shared by replicas, the batch inbox insert — on a real NATS and real databases."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase

from crm.common.v1 import envelope_pb2, paging_pb2
from crm_platform.bus import PublishError, StreamSpec
from crm_platform.ids import new_id
from crm_platform.inbox import ConsumerRunner, Event, Subscription
from crm_platform.outbox import Outbox, OutboxRelay, make_envelope, utcnow
from crm_platform.schema import inbox as inbox_table
from crm_platform.schema import outbox as outbox_table
from crm_testing.nats_server import NatsServer
from crm_testing.outbox_env import OutboxEnv, make_outbox_env, notes
from crm_testing.plugin import unique_streams
from crm_testing.streams import connect_bus, delete_stream, stream_envelopes


async def _until(condition: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def _envelope(env: OutboxEnv, subject_id: str) -> envelope_pb2.EventEnvelope:
    return make_envelope(f"{env.root}.note.created", "test", paging_pb2.PageInfo(), subject_id=subject_id, actor="t")


async def test_publish_batch_waits_for_every_ack_and_keeps_order(nats_url: str) -> None:
    name, root = unique_streams()
    stream = StreamSpec(name, (f"{root}.>",))
    bus = await connect_bus(nats_url, stream)
    try:
        messages = [(new_id(), f"{root}.note.created", f"m{i}".encode()) for i in range(300)]
        await bus.publish_batch(messages[:150], timeout=5)
        await bus.publish_batch(messages[150:], timeout=5)
        await bus.publish_batch(messages[:10], timeout=5)  # re-published: acknowledged, dropped as duplicates
        info = await bus.js.stream_info(name)
        assert info.state.messages == 300
        sub = await bus.js.pull_subscribe(f"{root}.>", durable=None, stream=name)
        received = []
        while len(received) < 300:
            received += [msg.data for msg in await sub.fetch(300, timeout=2)]
        assert received == [data for _, _, data in messages]  # in publish order
    finally:
        await bus.close()
        await delete_stream(nats_url, stream)


async def test_publish_batch_raises_when_no_stream_takes_the_subject(nats_url: str) -> None:
    name, root = unique_streams()
    stream = StreamSpec(name, (f"{root}.>",))
    bus = await connect_bus(nats_url, stream)
    try:
        messages = [(new_id(), f"{root}.note.created", b"ok"), (new_id(), f"nostream{root}.x", b"lost")]
        with pytest.raises(PublishError):
            await bus.publish_batch(messages, timeout=5)
    finally:
        await bus.close()
        await delete_stream(nats_url, stream)


async def test_event_of_a_released_savepoint_is_published_only_when_its_transaction_commits(
    outbox_env: OutboxEnv, nats_url: str
) -> None:
    env = outbox_env
    bus = await connect_bus(nats_url, env.stream)
    relay = OutboxRelay(env.engine, bus, poll_interval=30.0)  # only the commit's wake-up can publish it
    outbox = Outbox("test", notify=relay.wake)
    relay.start()
    subject = f"{env.root}.note.created"
    # A write before each savepoint: pysqlite sends BEGIN only before a write, so on SQLite a savepoint opened
    # first would be the outermost transaction and its release a commit.
    try:
        with pytest.raises(RuntimeError):
            async with env.sessions() as session, session.begin():
                await session.execute(insert(notes).values(id="a", text="x"))
                async with session.begin_nested():
                    await outbox.add(session, subject, paging_pb2.PageInfo(), subject_id="a", actor="t")
                raise RuntimeError("the outer transaction fails after the savepoint was released")
        async with env.sessions() as session, session.begin():
            await session.execute(insert(notes).values(id="b", text="x"))
            async with session.begin_nested():
                kept = await outbox.add(session, subject, paging_pb2.PageInfo(), subject_id="b", actor="t")
        published = await stream_envelopes(bus, env.stream, expected=1, timeout=5)
        await asyncio.sleep(0.3)
        assert [e.id for e in published] == [kept]
        assert (await bus.js.stream_info(env.stream.name)).state.messages == 1
        assert await env.count(outbox_table) == 1
        assert await env.count(notes) == 1
    finally:
        await relay.stop()
        await bus.close()
        await delete_stream(nats_url, env.stream)


async def test_outbox_rows_commit_and_roll_back_with_the_transaction_on_every_path(outbox_env: OutboxEnv) -> None:
    # The first statement of a transaction goes through SQLAlchemy (it sends BEGIN); on PostgreSQL the later
    # ones go straight through the driver, in the same transaction.
    env = outbox_env
    outbox = Outbox("test")
    subject = f"{env.root}.note.created"
    for fail in (True, False):
        with pytest.raises(RuntimeError) if fail else _no_error():
            async with env.sessions() as session, session.begin():
                for i in range(3):
                    await outbox.add(session, subject, paging_pb2.PageInfo(), subject_id=str(i), actor="t")
                await session.execute(insert(notes).values(id=new_id(), text="after the events"))
                await outbox.add(session, subject, paging_pb2.PageInfo(), subject_id="last", actor="t")
                if fail:
                    raise RuntimeError("rolled back")
    assert await env.count(outbox_table) == 4
    assert await env.count(notes) == 1


async def test_stop_keeps_its_deadline_when_the_broker_is_gone(outbox_env: OutboxEnv, tmp_path: Path) -> None:
    env = outbox_env
    server = NatsServer(tmp_path / "nats").start()
    bus = await connect_bus(server.url, env.stream)
    relay = OutboxRelay(env.engine, bus, publish_timeout=3.0)
    outbox = Outbox("test", notify=relay.wake)
    relay.start()
    subject = f"{env.root}.note.created"
    try:
        server.stop()
        for i in range(5):  # five commits, five batches awaiting acknowledgements that never come
            async with env.sessions() as session, session.begin():
                await outbox.add(session, subject, paging_pb2.PageInfo(), subject_id=str(i), actor="t")
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await relay.stop(flush_timeout=1.0)
        assert loop.time() - started < 2.0
        assert await env.count(outbox_table, outbox_table.c.published_at.is_(None)) == 5  # left for the next start
    finally:
        await bus.close()
        server.stop()


class _no_error:  # noqa: N801 - reads as a context manager expression
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


@pytest.mark.postgres
async def test_replicas_draining_a_backlog_publish_each_row_once(postgres_url: str, nats_url: str) -> None:
    name, root = unique_streams()
    env = await make_outbox_env(postgres_url, StreamSpec(name, (f"{root}.>",)), root)
    subject = f"{root}.note.created"
    rows = []
    for i in range(3000):
        envelope = make_envelope(subject, "test", paging_pb2.PageInfo(), subject_id=str(i), actor="t")
        data = envelope.SerializeToString()
        rows.append({"id": envelope.id, "subject": subject, "envelope": data, "created_at": utcnow()})
    async with env.engine.begin() as conn:
        await conn.execute(insert(outbox_table), rows)
    bus = await connect_bus(nats_url, env.stream)
    try:
        replicas = [OutboxRelay(env.engine, bus, batch_size=150) for _ in range(2)]
        counts = await asyncio.gather(*(relay.publish_pending() for relay in replicas))
        assert sum(counts) == 3000  # SKIP LOCKED: no row was claimed by both, even with two batches in flight each
        assert all(counts)
        assert await env.count(outbox_table, outbox_table.c.published_at.is_(None)) == 0
        assert (await bus.js.stream_info(name)).state.messages == 3000
    finally:
        await bus.close()
        await delete_stream(nats_url, env.stream)
        await env.engine.dispose()


async def test_copies_of_an_event_in_one_batch_are_applied_once(outbox_env: OutboxEnv, nats_url: str) -> None:
    env = outbox_env
    bus = await connect_bus(nats_url, env.stream)
    durable = f"test-{uuid.uuid4().hex[:8]}"
    applied: list[str] = []

    async def on_note(session: object, event: Event) -> None:
        applied.append(event.subject_id)
        await session.execute(insert(notes).values(id=event.subject_id, text="x"))  # type: ignore[attr-defined]

    first, second = _envelope(env, "n1"), _envelope(env, "n2")
    ignored = make_envelope(f"{env.root}.note.archived", "test", paging_pb2.PageInfo(), subject_id="n3", actor="t")
    # Published before the consumer starts, so one fetch takes them all: a copy past JetStream's
    # de-duplication (another Nats-Msg-Id) sits in the same batch as its original.
    for envelope, msg_id in ((first, None), (second, None), (first, "copy"), (ignored, None)):
        headers = {"Nats-Msg-Id": f"{envelope.id}-{msg_id}" if msg_id else envelope.id}
        await bus.js.publish(envelope.type, envelope.SerializeToString(), headers=headers)
    runner = ConsumerRunner(
        bus,
        env.sessions,
        Outbox("test"),
        [Subscription(durable, env.stream.name, f"{env.root}.>", {f"{env.root}.note.created": on_note})],
    )
    await runner.start()
    try:

        async def all_recorded() -> bool:
            return await env.count(inbox_table, inbox_table.c.consumer == durable) >= 3

        await _until(all_recorded)
        await asyncio.sleep(0.3)
        assert sorted(applied) == ["n1", "n2"]
        assert await env.count(notes) == 2
        info = await bus.js.consumer_info(env.stream.name, durable)
        assert info.num_ack_pending == 0 and info.num_pending == 0  # every copy acknowledged
    finally:
        await runner.stop()
        await bus.close()
        await delete_stream(nats_url, env.stream)


@pytest.mark.parametrize("handler_writes", [True, False])
async def test_failed_handler_in_a_batch_leaves_no_inbox_row_and_is_retried(
    outbox_env: OutboxEnv, nats_url: str, handler_writes: bool
) -> None:
    env = outbox_env
    bus = await connect_bus(nats_url, env.stream)
    durable = f"test-{uuid.uuid4().hex[:8]}"
    calls: dict[str, int] = {}

    async def flaky(session: object, event: Event) -> None:
        calls[event.subject_id] = calls.get(event.subject_id, 0) + 1
        if handler_writes:
            await session.execute(insert(notes).values(id=event.subject_id, text="x"))  # type: ignore[attr-defined]
        if event.subject_id == "bad" and calls["bad"] == 1:
            raise RuntimeError("first try fails")

    for subject_id in ("ok1", "bad", "ok2"):
        envelope = _envelope(env, subject_id)
        await bus.js.publish(envelope.type, envelope.SerializeToString(), headers={"Nats-Msg-Id": envelope.id})
    runner = ConsumerRunner(
        bus,
        env.sessions,
        Outbox("test"),
        [Subscription(durable, env.stream.name, f"{env.root}.>", {f"{env.root}.note.created": flaky})],
        backoff_base=0.05,
    )
    await runner.start()
    try:

        async def all_recorded() -> bool:
            return await env.count(inbox_table, inbox_table.c.consumer == durable) >= 3

        await _until(all_recorded)
        assert calls == {"ok1": 1, "bad": 2, "ok2": 1}
        assert await env.count(notes) == (3 if handler_writes else 0)
    finally:
        await runner.stop()
        await bus.close()
        await delete_stream(nats_url, env.stream)


async def test_event_a_handler_adds_is_published_once_its_batch_commits(outbox_env: OutboxEnv, nats_url: str) -> None:
    # On PostgreSQL the handler's session commits nothing itself (the batch's transaction is the driver's):
    # the hand-over to the relay must wait for the real commit, and never happen for a batch rolled back.
    env = outbox_env
    bus = await connect_bus(nats_url, env.stream)
    relay = OutboxRelay(env.engine, bus, poll_interval=30.0)  # only a wake-up after the commit can publish
    outbox = Outbox("test", notify=relay.wake)
    relay.start()
    durable = f"test-{uuid.uuid4().hex[:8]}"
    follow_up = f"{env.root}.note.followed"

    async def on_note(session: object, event: Event) -> None:
        await session.execute(insert(notes).values(id=event.subject_id, text="x"))  # type: ignore[attr-defined]
        await outbox.add(session, follow_up, paging_pb2.PageInfo(), subject_id=event.subject_id, actor="t")  # type: ignore[arg-type]
        if event.subject_id == "refused":
            raise RuntimeError("fails after adding its event")

    runner = ConsumerRunner(
        bus,
        env.sessions,
        Outbox("test"),
        [Subscription(durable, env.stream.name, f"{env.root}.note.created", {f"{env.root}.note.created": on_note})],
        max_deliveries=1,
    )
    await runner.start()
    try:
        for subject_id in ("refused", "kept"):  # one at a time: each its own batch of one
            envelope = _envelope(env, subject_id)
            await bus.js.publish(envelope.type, envelope.SerializeToString(), headers={"Nats-Msg-Id": envelope.id})
            await asyncio.sleep(0.3)

        async def follow_up_published() -> bool:
            info = await bus.js.stream_info(env.stream.name)
            return bool(info.state.messages >= 3)  # the two events and one follow-up

        await _until(follow_up_published)
        await asyncio.sleep(0.3)
        published = [e for e in await stream_envelopes(bus, env.stream, expected=3) if e.type == follow_up]
        assert [e.subject_id for e in published] == ["kept"]
        assert await env.count(notes) == 1
    finally:
        await runner.stop()
        await relay.stop()
        await bus.close()
        await delete_stream(nats_url, env.stream)


@pytest.mark.postgres
async def test_event_a_handler_adds_is_not_published_when_the_batch_commit_fails(
    postgres_url: str, nats_url: str
) -> None:
    name, root = unique_streams()
    env = await make_outbox_env(postgres_url, StreamSpec(name, (f"{root}.>",)), root)
    async with env.engine.begin() as conn:  # a check PostgreSQL makes only at COMMIT
        await conn.execute(text("CREATE TABLE once_per_commit (id text PRIMARY KEY DEFERRABLE INITIALLY DEFERRED)"))
    bus = await connect_bus(nats_url, env.stream)
    relay = OutboxRelay(env.engine, bus, poll_interval=30.0)
    outbox = Outbox("test", notify=relay.wake)
    relay.start()
    durable = f"test-{uuid.uuid4().hex[:8]}"
    follow_up = f"{root}.note.followed"
    attempts: list[int] = []

    async def on_note(session: object, event: Event) -> None:
        attempts.append(1)
        await outbox.add(session, follow_up, paging_pb2.PageInfo(), subject_id=event.subject_id, actor="t")  # type: ignore[arg-type]
        for _ in range(2 if len(attempts) == 1 else 1):  # the first attempt's COMMIT fails
            await session.execute(text("INSERT INTO once_per_commit VALUES (:id)"), {"id": f"{event.id}"})  # type: ignore[attr-defined]

    runner = ConsumerRunner(
        bus,
        env.sessions,
        Outbox("test"),
        [Subscription(durable, name, f"{root}.note.created", {f"{root}.note.created": on_note})],
        backoff_base=0.05,
    )
    await runner.start()
    try:
        envelope = _envelope(env, "n1")
        await bus.js.publish(envelope.type, envelope.SerializeToString(), headers={"Nats-Msg-Id": envelope.id})

        async def handled() -> bool:
            return await env.count(inbox_table, inbox_table.c.consumer == durable) == 1

        await _until(handled)
        await asyncio.sleep(0.5)
        assert len(attempts) == 2
        published = [e for e in await stream_envelopes(bus, env.stream, expected=2) if e.type == follow_up]
        assert len(published) == 1  # only the committed attempt's follow-up
        assert await env.count(outbox_table) == 1
    finally:
        await runner.stop()
        await relay.stop()
        await bus.close()
        await delete_stream(nats_url, env.stream)
        await env.engine.dispose()


class _Base(DeclarativeBase):
    pass


class _Note(_Base):
    __table__ = notes


async def test_orm_objects_a_handler_adds_are_flushed_into_its_batch(outbox_env: OutboxEnv, nats_url: str) -> None:
    env = outbox_env
    bus = await connect_bus(nats_url, env.stream)
    durable = f"test-{uuid.uuid4().hex[:8]}"

    async def on_note(session: AsyncSession, event: Event) -> None:
        session.add(_Note(id=event.subject_id, text="from the ORM"))  # flushed by the batch's commit, not here
        if event.subject_id == "bad":
            await session.flush()
            raise RuntimeError("its row goes with its savepoint")

    for subject_id in ("a", "bad", "b"):
        envelope = _envelope(env, subject_id)
        await bus.js.publish(envelope.type, envelope.SerializeToString(), headers={"Nats-Msg-Id": envelope.id})
    runner = ConsumerRunner(
        bus,
        env.sessions,
        Outbox("test"),
        [Subscription(durable, env.stream.name, f"{env.root}.>", {f"{env.root}.note.created": on_note})],
        max_deliveries=1,
    )
    await runner.start()
    try:

        async def all_recorded() -> bool:
            return await env.count(inbox_table, inbox_table.c.consumer == durable) >= 3

        await _until(all_recorded)
        async with env.engine.connect() as conn:
            texts = dict((await conn.execute(select(notes.c.id, notes.c.text))).all())
        assert texts == {"a": "from the ORM", "b": "from the ORM"}
    finally:
        await runner.stop()
        await bus.close()
        await delete_stream(nats_url, env.stream)


@pytest.mark.postgres
async def test_consumer_recovers_when_its_database_connection_is_killed(postgres_url: str, nats_url: str) -> None:
    name, root = unique_streams()
    env = await make_outbox_env(postgres_url, StreamSpec(name, (f"{root}.>",)), root)
    bus = await connect_bus(nats_url, env.stream)
    durable = f"test-{uuid.uuid4().hex[:8]}"

    async def on_note(session: AsyncSession, event: Event) -> None:
        await session.execute(insert(notes).values(id=event.subject_id, text="x"))

    runner = ConsumerRunner(
        bus,
        env.sessions,
        Outbox("test"),
        [Subscription(durable, name, f"{root}.>", {f"{root}.note.created": on_note})],
        backoff_base=0.05,
    )
    await runner.start()
    try:
        for subject_id in ("before", "after"):
            envelope = _envelope(env, subject_id)
            await bus.js.publish(envelope.type, envelope.SerializeToString(), headers={"Nats-Msg-Id": envelope.id})

            async def applied(expected: int = 1 if subject_id == "before" else 2) -> bool:
                return await env.count(notes) == expected

            await _until(applied)
            if subject_id == "before":  # as a database restart would: the consumer's kept connection dies
                async with env.engine.connect() as conn:
                    await conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    )
        assert await env.count(inbox_table, inbox_table.c.consumer == durable) == 2
    finally:
        await runner.stop()
        await bus.close()
        await delete_stream(nats_url, env.stream)
        await env.engine.dispose()
