"""JetStream helpers for tests: a bus on a uniquely named stream, reading it back, cleaning it up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import nats
from nats.aio.msg import Msg

from crm.common.v1 import envelope_pb2
from crm_platform.bus import Bus, StreamSpec


async def connect_bus(url: str, stream: StreamSpec) -> Bus:
    """A connected bus with ``stream`` created."""
    bus = Bus(url, name="crm-test")
    await bus.connect(attempts=3)
    await bus.ensure_streams((stream,))
    return bus


async def delete_stream(url: str, stream: StreamSpec) -> None:
    """Remove a test stream (tests clean up after themselves)."""
    bus = Bus(url, name="crm-test-cleanup")
    await bus.connect(attempts=3)
    try:
        await bus.js.delete_stream(stream.name)
    except Exception:  # noqa: BLE001 - already gone
        pass
    await bus.close()


@contextlib.asynccontextmanager
async def stream_bus(url: str, stream: StreamSpec) -> AsyncIterator[Bus]:
    """:func:`connect_bus` for a test's block; on leaving it, the bus is closed and ``stream`` deleted."""
    bus = await connect_bus(url, stream)
    try:
        yield bus
    finally:
        await bus.close()
        await delete_stream(url, stream)


async def stream_envelopes(
    bus: Bus, stream: StreamSpec, expected: int, timeout: float = 10.0
) -> list[envelope_pb2.EventEnvelope]:
    """Every envelope in ``stream``, after waiting (bounded) until at least ``expected`` are stored."""
    js = bus.js
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        info = await js.stream_info(stream.name)
        if info.state.messages >= expected or loop.time() > deadline:
            break
        await asyncio.sleep(0.05)
    sub = await js.pull_subscribe(stream.subjects[0], durable=None, stream=stream.name)
    envelopes: list[envelope_pb2.EventEnvelope] = []
    while len(envelopes) < info.state.messages:
        for msg in await sub.fetch(500, timeout=2):
            envelopes.append(envelope_pb2.EventEnvelope.FromString(msg.data))
            await msg.ack()
    await sub.unsubscribe()
    return envelopes


async def messages_about(
    nats_url: str, stream: str, subject: str, subject_id: str, timeout: float = 10.0
) -> list[tuple[Msg, envelope_pb2.EventEnvelope]]:
    """Every message on ``subject`` about ``subject_id``, waiting (bounded) until at least one has arrived."""
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().pull_subscribe(subject, durable=None, stream=stream)
        found: list[tuple[Msg, envelope_pb2.EventEnvelope]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not found and loop.time() < deadline:
            try:
                msgs = await sub.fetch(100, timeout=1)
            except TimeoutError:
                continue
            for msg in msgs:
                envelope = envelope_pb2.EventEnvelope.FromString(msg.data)
                if envelope.subject_id == subject_id:
                    found.append((msg, envelope))
        return found
    finally:
        await nc.close()
