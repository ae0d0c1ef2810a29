"""gRPC stubs of the services, one channel each, and the call wrapper that maps failures to HTTP problems."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crm.customer.v1 import customer_service_pb2_grpc, import_service_pb2_grpc
from crm.interaction.v1 import interaction_service_pb2_grpc
from crm.notification.v1 import notification_service_pb2_grpc
from crm.opportunity.v1 import opportunity_service_pb2_grpc
from crm.reporting.v1 import reporting_service_pb2_grpc
from crm.ticket.v1 import ticket_service_pb2_grpc
from crm_gateway.errors import ServiceFailure
from crm_platform.auth_context import Identity
from crm_platform.grpc_client import call_metadata, insecure_channel, parse_failure

T = TypeVar("T")

_STUBS: dict[str, Callable[[grpc.aio.Channel], Any]] = {
    "customer": customer_service_pb2_grpc.CustomerServiceStub,
    "interaction": interaction_service_pb2_grpc.InteractionServiceStub,
    "opportunity": opportunity_service_pb2_grpc.OpportunityServiceStub,
    "ticket": ticket_service_pb2_grpc.TicketServiceStub,
    "notification": notification_service_pb2_grpc.NotificationServiceStub,
    "reporting": reporting_service_pb2_grpc.ReportingServiceStub,
}
# Further services served by a process above: name → (the process's channel, stub).
_SHARED_CHANNEL_STUBS: dict[str, tuple[str, Callable[[grpc.aio.Channel], Any]]] = {
    "customer_import": ("customer", import_service_pb2_grpc.CustomerImportServiceStub),
}


class Services:
    """Channels and stubs to every service; ``call`` adds the signed identity and the deadline."""

    def __init__(self, addresses: dict[str, str], secret: str, timeout: float) -> None:
        self._secret = secret
        self._timeout = timeout
        self._channels = {name: insecure_channel(addr) for name, addr in addresses.items()}
        self.stubs = {name: _STUBS[name](channel) for name, channel in self._channels.items()}
        for name, (process, stub) in _SHARED_CHANNEL_STUBS.items():
            if process in self._channels:
                self.stubs[name] = stub(self._channels[process])

    async def call(self, service: str, method: str, request: Any, identity: Identity) -> Any:
        """Call ``service.method`` as ``identity``; raise :class:`ServiceFailure` on any RPC error."""
        rpc: Callable[..., Awaitable[Any]] = getattr(self.stubs[service], method)
        try:
            return await rpc(request, metadata=call_metadata(identity, self._secret), timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise ServiceFailure(service, parse_failure(exc)) from None

    async def call_stream(
        self, service: str, method: str, requests: AsyncIterator[Any], identity: Identity, timeout: float
    ) -> Any:
        """Call a client-streaming ``service.method`` as ``identity`` with ``requests``; failures as in :meth:`call`."""
        rpc: Callable[..., Awaitable[Any]] = getattr(self.stubs[service], method)
        try:
            return await rpc(requests, metadata=call_metadata(identity, self._secret), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise ServiceFailure(service, parse_failure(exc)) from None

    async def health(self, timeout: float = 1.0) -> dict[str, bool]:
        """Which services answer SERVING right now (checked concurrently)."""

        async def check(name: str, channel: grpc.aio.Channel) -> bool:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=timeout
                )
            except grpc.aio.AioRpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        names = list(self._channels)
        results = await asyncio.gather(*(check(n, self._channels[n]) for n in names))
        return dict(zip(names, results, strict=True))

    async def close(self) -> None:
        """Close every channel."""
        await asyncio.gather(*(c.close() for c in self._channels.values()))
