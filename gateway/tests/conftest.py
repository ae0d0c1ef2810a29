"""Gateway test fixtures: the gateway served by a real uvicorn in the test's event loop, in front of a real
customer service (real gRPC on loopback, real databases, real NATS)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from crm_customer.server import SPEC as CUSTOMER
from crm_gateway.app import create_app
from crm_gateway.config import Settings
from crm_platform.config import load
from crm_testing.nats_server import NatsServer, free_port
from crm_testing.services import TEST_SECRET, running_service
from gateway_harness import Gateway, served


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
        async with served(app) as gateway:  # the production HTTP protocol, in this event loop
            yield gateway
