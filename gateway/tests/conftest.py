"""Gateway test fixtures: the gateway served by a real uvicorn in the test's event loop, in front of a real
customer service (real gRPC on loopback, real databases, real NATS)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from crm_customer.server import SPEC as CUSTOMER
from crm_gateway.app import create_app
from crm_gateway.config import Settings
from crm_gateway.http_protocol import CoalescingHttpToolsProtocol
from crm_platform.config import load
from crm_testing.nats_server import NatsServer, free_port
from crm_testing.services import TEST_SECRET, running_service
from gateway_harness import Gateway


@pytest.fixture
def gateway_env() -> dict[str, str]:
    """Extra gateway settings for a test module (override this fixture in the module)."""
    return {}


@pytest.fixture
async def gateway(
    gateway_env: dict[str, str], sqlite_url: str, private_nats: NatsServer, tmp_path: Path
) -> AsyncIterator[Gateway]:
    async with running_service(CUSTOMER, database_url=sqlite_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        unused = f"127.0.0.1:{free_port()}"
        settings = load(
            Settings,
            {
                "CRM_DATA_DIR": str(tmp_path),
                "CRM_NATS_URL": private_nats.url,
                "CRM_INTERNAL_SECRET": TEST_SECRET,
                "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
                "CRM_DEMO": "1",
                "CRM_CUSTOMER_ADDR": f"127.0.0.1:{svc.grpc_port}",
                **{
                    f"CRM_{s}_ADDR": unused
                    for s in ("INTERACTION", "OPPORTUNITY", "TICKET", "NOTIFICATION", "REPORTING")
                },
                **gateway_env,
            },
        )
        app = create_app(settings)
        # A real HTTP server in this event loop, so the gateway and the service share it without blocking.
        port = free_port()
        # The production HTTP protocol (crm_gateway.http_protocol), as python -m crm_gateway serves.
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, http=CoalescingHttpToolsProtocol, log_config=None, lifespan="on"
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield Gateway(client, app)
        server.should_exit = True
        await task
