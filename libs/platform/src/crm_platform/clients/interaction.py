"""Typed client of the interaction service (``crm.interaction.v1.InteractionService``)."""

from __future__ import annotations

from crm.interaction.v1 import interaction_service_pb2 as pb
from crm.interaction.v1 import interaction_service_pb2_grpc
from crm_platform.auth_context import Identity
from crm_platform.clients.base import ServiceClient


class InteractionClient(ServiceClient):
    """The interaction service (``crm.interaction.v1.InteractionService``).

    Reads are retried on UNAVAILABLE; writes are not.
    """

    service = "interaction"
    stub_class = interaction_service_pb2_grpc.InteractionServiceStub

    async def log_interaction(self, identity: Identity, request: pb.LogInteractionRequest) -> pb.LogInteractionResponse:
        """``LogInteraction``."""
        return await self._unary("LogInteraction", request, identity, idempotent=False)

    async def list_interactions(
        self, identity: Identity, request: pb.ListInteractionsRequest
    ) -> pb.ListInteractionsResponse:
        """``ListInteractions``."""
        return await self._unary("ListInteractions", request, identity, idempotent=True)
