"""The gateway test harness: a client bound to a running gateway, the demo password, and the HTTP server the
tests run a gateway (or any ASGI app) on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import uvicorn
from google.protobuf.message import Message
from litestar import Litestar
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm.common.v1 import envelope_pb2
from crm_gateway.http_protocol import CoalescingHttpToolsProtocol
from crm_platform.schema import outbox
from crm_testing.nats_server import free_port

M = TypeVar("M", bound=Message)

PASSWORD = "Demo-Passw0rd!"


@dataclass
class Gateway:
    client: httpx.AsyncClient
    app: Litestar

    async def login(self, username: str, password: str = PASSWORD) -> dict[str, str]:
        reply = await self.client.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert reply.status_code == 200, reply.text
        return reply.json()

    async def bearer(self, username: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {(await self.login(username))['access_token']}"}


@contextlib.asynccontextmanager
async def serving(app: Any, http: type[asyncio.Protocol] = CoalescingHttpToolsProtocol) -> AsyncIterator[int]:
    """Serve ``app`` with uvicorn on a free loopback port in this event loop (so the app and the services it
    calls share the loop without blocking), on the HTTP protocol ``python -m crm_gateway`` serves with; yield
    the port, stop the server on the way out."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=http, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def served(app: Litestar) -> AsyncIterator[Gateway]:
    """The gateway ``app`` served (:func:`serving`), with a client bound to it."""
    async with serving(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield Gateway(client, app)


async def outbox_events(engine: AsyncEngine, subject: str, kind: type[M]) -> list[tuple[envelope_pb2.EventEnvelope, M]]:
    """The events on ``subject`` in the outbox (published or not), oldest first, with their payloads."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(select(outbox.c.envelope).where(outbox.c.subject == subject).order_by(outbox.c.id))
        ).all()
    found = []
    for (data,) in rows:
        envelope = envelope_pb2.EventEnvelope.FromString(data)
        payload = kind()
        envelope.payload.Unpack(payload)
        found.append((envelope, payload))
    return found
