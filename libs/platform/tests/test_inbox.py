"""Durable consumers with the inbox, against a real database (SQLite, PostgreSQL) and a real NATS."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from sqlalchemy import insert, select

from crm.common.v1 import dead_letter_pb2, envelope_pb2, paging_pb2
from crm_platform.bus import Bus
from crm_platform.inbox import ConsumerRunner, Event, Subscription
from crm_platform.outbox import Outbox, make_envelope
from crm_platform.schema import inbox as inbox_table
from crm_platform.schema import outbox as outbox_table
from crm_testing.outbox_env import OutboxEnv, notes
from crm_testing.streams import connect_bus, delete_stream


async def _until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await condition():  # type: ignore[misc]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def _envelope(env: OutboxEnv, note_id: str) -> envelope_pb2.EventEnvelope:
    return make_envelope(
        f"{env.root}.note.created", "test", paging_pb2.PageInfo(next_page_token=note_id), subject_id=note_id, actor="t"
    )


async def _publish(bus: Bus, envelope: envelope_pb2.EventEnvelope, msg_id: str | None = None) -> None:
    await bus.js.publish(envelope.type, envelope.SerializeToString(), headers={"Nats-Msg-Id": msg_id or envelope.id})


async def test_redelivered_event_is_applied_once(outbox_env: OutboxEnv, nats_url: str) -> None:
    env = outbox_env
    bus = await connect_bus(nats_url, env.stream)
    durable = f"test-{uuid.uuid4().hex[:8]}"

    async def on_note(session: object, event: Event) -> None:
        await session.execute(insert(notes).values(id=event.subject_id, text="from event"))  # type: ignore[attr-defined]

    runner = ConsumerRunner(
        bus,
        env.sessions,
        Outbox("test"),
        [Subscription(durable, env.stream.name, f"{env.root}.>", {f"{env.root}.note.created": on_note})],
    )
    await runner.start()
    try:
        envelope = _envelope(env, "n1")
        # The same event twice past JetStream's de-duplication (as after a relay crash outside its window).
        await _publish(bus, envelope)
        await _publish(bus, envelope, msg_id=f"{envelope.id}-again")
        await _until(lambda: _handled(env, durable, 1))
        await asyncio.sleep(0.3)  # give the second copy time to arrive and be recognised
        assert await env.count(notes) == 1
        assert await env.count(inbox_table, inbox_table.c.consumer == durable) == 1
    finally:
        await runner.stop()
        await bus.close()
        await delete_stream(nats_url, env.stream)


async def _handled(env: OutboxEnv, durable: str, n: int) -> bool:
    return await env.count(inbox_table, inbox_table.c.consumer == durable) >= n


async def test_failing_handler_is_retried_then_succeeds_once(outbox_env: OutboxEnv, nats_url: str) -> None:
    env = outbox_env
    bus = await connect_bus(nats_url, env.stream)
    durable = f"test-{uuid.uuid4().hex[:8]}"
    attempts: list[int] = []

    async def flaky(session: object, event: Event) -> None:
        attempts.append(1)
        await session.execute(insert(notes).values(id=event.subject_id, text="x"))  # type: ignore[attr-defined]
        if len(attempts) < 3:
            raise RuntimeError("downstream hiccup")  # rolls back the insert above and the inbox row

    runner = ConsumerRunner(
        bus,
        env.sessions,
        Outbox("test"),
        [Subscription(durable, env.stream.name, f"{env.root}.>", {f"{env.root}.note.created": flaky})],
        max_deliveries=5,
        backoff_base=0.05,
    )
    await runner.start()
    try:
        await _publish(bus, _envelope(env, "n2"))
        await _until(lambda: _handled(env, durable, 1))
        assert len(attempts) == 3
        assert await env.count(notes) == 1
    finally:
        await runner.stop()
        await bus.close()
        await delete_stream(nats_url, env.stream)


async def test_handler_that_keeps_failing_is_dead_lettered_after_n_tries(outbox_env: OutboxEnv, nats_url: str) -> None:
    env = outbox_env
    bus = await connect_bus(nats_url, env.stream)
    durable = f"test-{uuid.uuid4().hex[:8]}"
    attempts: list[int] = []

    async def broken(session: object, event: Event) -> None:
        attempts.append(1)
        raise ValueError("cannot handle this event")

    runner = ConsumerRunner(
        bus,
        env.sessions,
        Outbox("test"),
        [Subscription(durable, env.stream.name, f"{env.root}.>", {f"{env.root}.note.created": broken})],
        max_deliveries=3,
        backoff_base=0.05,
    )
    assert [runner.backoff(n) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]  # exponential back-off
    await runner.start()
    envelope = _envelope(env, "n3")
    try:
        await _publish(bus, envelope)
        await _until(lambda: _handled(env, durable, 1))
        assert len(attempts) == 3
        async with env.engine.connect() as conn:
            outcome = (await conn.execute(select(inbox_table.c.outcome))).scalar_one()
            row = (await conn.execute(select(outbox_table.c.subject, outbox_table.c.envelope))).one()
        assert outcome == "dead_lettered"
        assert row.subject == f"crm.dlq.{durable}"
        letter = dead_letter_pb2.DeadLetter()
        envelope_pb2.EventEnvelope.FromString(row.envelope).payload.Unpack(letter)
        assert letter.deliveries == 3 and "cannot handle this event" in letter.error
        assert envelope_pb2.EventEnvelope.FromString(letter.original_envelope).id == envelope.id
        # Nothing is left pending: the stream is not blocked by the poison event.
        await asyncio.sleep(0.3)
        assert len(attempts) == 3
    finally:
        await runner.stop()
        await bus.close()
        await delete_stream(nats_url, env.stream)


async def test_unparseable_message_is_dead_lettered_at_once(outbox_env: OutboxEnv, nats_url: str) -> None:
    env = outbox_env
    bus = await connect_bus(nats_url, env.stream)
    durable = f"test-{uuid.uuid4().hex[:8]}"
    runner = ConsumerRunner(
        bus, env.sessions, Outbox("test"), [Subscription(durable, env.stream.name, f"{env.root}.>")]
    )
    await runner.start()
    try:
        await bus.js.publish(f"{env.root}.garbage", b"\xff\x00not a protobuf envelope")

        async def dead_lettered() -> bool:
            return await env.count(outbox_table, outbox_table.c.subject == f"crm.dlq.{durable}") == 1

        await _until(dead_lettered)
    finally:
        await runner.stop()
        await bus.close()
        await delete_stream(nats_url, env.stream)


async def test_one_failing_event_does_not_undo_the_others_in_its_batch(outbox_env: OutboxEnv, nats_url: str) -> None:
    env = outbox_env
    bus = await connect_bus(nats_url, env.stream)
    durable = f"test-{uuid.uuid4().hex[:8]}"
    attempts: dict[str, int] = {}

    async def picky(session: object, event: Event) -> None:
        attempts[event.subject_id] = attempts.get(event.subject_id, 0) + 1
        await session.execute(insert(notes).values(id=event.subject_id, text="x"))  # type: ignore[attr-defined]
        if event.subject_id == "b" and attempts["b"] < 3:
            raise RuntimeError("b is not ready yet")  # only b's savepoint rolls back

    for note_id in ("a", "b", "c"):  # published before the consumer starts: one fetched batch
        await _publish(bus, _envelope(env, note_id))
    runner = ConsumerRunner(
        bus,
        env.sessions,
        Outbox("test"),
        [Subscription(durable, env.stream.name, f"{env.root}.>", {f"{env.root}.note.created": picky})],
        max_deliveries=5,
        backoff_base=0.05,
    )
    await runner.start()
    try:
        await _until(lambda: _handled(env, durable, 3))
        assert attempts == {"a": 1, "b": 3, "c": 1}
        assert await env.count(notes) == 3
    finally:
        await runner.stop()
        await bus.close()
        await delete_stream(nats_url, env.stream)
