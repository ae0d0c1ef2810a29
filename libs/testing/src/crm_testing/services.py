"""Run a real service in-process on loopback (real gRPC, real database, real NATS) for a test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from crm_platform.auth_context import Identity, Scope
from crm_platform.config import load
from crm_platform.grpc_client import call_metadata
from crm_platform.runtime import ServiceSpec, run_service
from crm_testing.nats_server import free_port

TEST_SECRET = "test-internal-secret"
T = TypeVar("T")


def identity(
    user_id: str = "rm1",
    *,
    roles: tuple[str, ...] = ("rm",),
    scope: Scope = Scope.OWN,
    branch_id: str = "BJ001",
    team_id: str = "T1",
    region: str = "north",
    permissions: tuple[str, ...] = (),
) -> Identity:
    """An identity for tests; by default an RM of team T1 in branch BJ001 with broad permissions."""
    perms = permissions or (
        "customer:read",
        "customer:write",
        "customer:create",
        "interaction:read",
        "interaction:write",
        "opportunity:read",
        "opportunity:write",
        "ticket:read",
        "ticket:write",
        "notification:read",
        "report:read",
    )
    return Identity(user_id, roles, scope, branch_id, team_id, region, "req-test", frozenset(perms))


@dataclass
class RunningService:
    """A started service: its gRPC channel and how to sign calls."""

    channel: grpc.aio.Channel
    grpc_port: int
    metrics_port: int
    secret: str = TEST_SECRET

    def md(self, who: Identity) -> list[tuple[str, str]]:
        """Signed metadata for a call as ``who``."""
        return call_metadata(who, self.secret)


@contextlib.asynccontextmanager
async def running_service(
    spec: ServiceSpec, *, database_url: str, nats_url: str, data_dir: Path, extra_env: dict[str, str] | None = None
) -> AsyncIterator[RunningService]:
    """Start ``spec`` in this event loop and stop it (draining) when the block ends."""
    upper = spec.domain.upper()
    grpc_port, metrics_port = free_port(), free_port()
    environ = {
        "CRM_DATA_DIR": str(data_dir),
        "CRM_NATS_URL": nats_url,
        "CRM_INTERNAL_SECRET": TEST_SECRET,
        f"{upper}_DATABASE_URL": database_url,
        f"CRM_{upper}_GRPC_PORT": str(grpc_port),
        f"CRM_{upper}_METRICS_PORT": str(metrics_port),
        **(extra_env or {}),
    }
    settings = load(spec.settings_class, environ)
    stop = asyncio.Event()
    task = asyncio.create_task(run_service(spec, settings, stop))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    try:
        await _wait_serving(channel, task)
        yield RunningService(channel, grpc_port, metrics_port)
    finally:
        stop.set()
        await channel.close()
        await asyncio.wait_for(task, timeout=30)


async def _wait_serving(channel: grpc.aio.Channel, task: asyncio.Task[None], timeout: float = 30.0) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(channel)
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if task.done():
            task.result()  # re-raise the start-up error
            raise RuntimeError("service stopped during start-up")
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.05)
    raise TimeoutError("service did not become SERVING")


async def eventually_found(call: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    """Retry ``call`` while it answers NOT_FOUND (a service's customer directory has not heard of the
    customer yet: it learns from events), up to ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND or loop.time() > deadline:
                raise
        await asyncio.sleep(0.05)
