"""The gateway test harness: a client bound to a running gateway, and the demo password."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from litestar import Litestar

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
