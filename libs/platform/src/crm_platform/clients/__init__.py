"""Typed clients of every service, one class each (``crm_platform.clients.<service>``), used by the gateway and
by the services alike: methods named for the RPCs, typed requests and responses, a deadline on every call,
retries on ``UNAVAILABLE`` for idempotent calls only, and the signed identity of the caller — a user's, or a
service's own (``svc:<name>``, :meth:`crm_platform.policy.Policy.service_identity`) with ``on_behalf_of``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crm_platform.clients.base import CallFailed, ServiceClient
from crm_platform.clients.customer import CustomerClient
from crm_platform.clients.customer_import import CustomerImportClient
from crm_platform.clients.interaction import InteractionClient
from crm_platform.clients.notification import NotificationClient
from crm_platform.clients.opportunity import OpportunityClient
from crm_platform.clients.reporting import ReportingClient
from crm_platform.clients.ticket import TicketClient
from crm_platform.grpc_client import insecure_channel

__all__ = [
    "CallFailed",
    "Clients",
    "CustomerClient",
    "CustomerImportClient",
    "InteractionClient",
    "NotificationClient",
    "OpportunityClient",
    "ReportingClient",
    "ServiceClient",
    "TicketClient",
]

C = TypeVar("C", bound=ServiceClient)

# The process each client talks to (the customer process also serves the imports).
SERVICES = ("customer", "interaction", "opportunity", "ticket", "notification", "reporting")


class Clients:
    """One channel per service process and a typed client on each; ``addresses`` maps a service to host:port
    (a service left out has no client: using it raises ``KeyError``)."""

    def __init__(self, addresses: Mapping[str, str], secret: str, *, timeout: float = 5.0) -> None:
        self._channels = {name: insecure_channel(addr) for name, addr in addresses.items() if name in SERVICES}

        def client(cls: type[C]) -> C | None:
            channel = self._channels.get(cls.service)
            return cls(channel, secret, timeout=timeout) if channel is not None else None

        self._customer = client(CustomerClient)
        self._customer_import = client(CustomerImportClient)
        self._interaction = client(InteractionClient)
        self._opportunity = client(OpportunityClient)
        self._ticket = client(TicketClient)
        self._notification = client(NotificationClient)
        self._reporting = client(ReportingClient)

    @staticmethod
    def _need(client: C | None, name: str) -> C:
        if client is None:
            raise KeyError(f"no address configured for the {name} service")
        return client

    @property
    def customer(self) -> CustomerClient:
        """The customer service."""
        return self._need(self._customer, "customer")

    @property
    def customer_import(self) -> CustomerImportClient:
        """Customer imports (the customer process)."""
        return self._need(self._customer_import, "customer")

    @property
    def interaction(self) -> InteractionClient:
        """The interaction service."""
        return self._need(self._interaction, "interaction")

    @property
    def opportunity(self) -> OpportunityClient:
        """The opportunity service."""
        return self._need(self._opportunity, "opportunity")

    @property
    def ticket(self) -> TicketClient:
        """The service-ticket service."""
        return self._need(self._ticket, "ticket")

    @property
    def notification(self) -> NotificationClient:
        """The notification service."""
        return self._need(self._notification, "notification")

    @property
    def reporting(self) -> ReportingClient:
        """The reporting service."""
        return self._need(self._reporting, "reporting")

    async def health(self, timeout: float = 1.0) -> dict[str, bool]:
        """Which service processes answer SERVING right now (checked concurrently)."""

        async def check(channel: grpc.aio.Channel) -> bool:
            try:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=timeout
                )
            except grpc.aio.AioRpcError:
                return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        names = list(self._channels)
        results = await asyncio.gather(*(check(self._channels[n]) for n in names))
        return dict(zip(names, results, strict=True))

    async def close(self) -> None:
        """Close every channel."""
        await asyncio.gather(*(c.close() for c in self._channels.values()))
