"""Typed client of the service-ticket service (``crm.ticket.v1.TicketService``)."""

from __future__ import annotations

from crm.ticket.v1 import ticket_service_pb2 as pb
from crm.ticket.v1 import ticket_service_pb2_grpc
from crm_platform.auth_context import Identity
from crm_platform.clients.base import ServiceClient


class TicketClient(ServiceClient):
    """The service-ticket service (``crm.ticket.v1.TicketService``).

    Reads are retried on UNAVAILABLE; writes are not.
    """

    service = "ticket"
    stub_class = ticket_service_pb2_grpc.TicketServiceStub

    async def open_ticket(self, identity: Identity, request: pb.OpenTicketRequest) -> pb.OpenTicketResponse:
        """``OpenTicket``."""
        return await self._unary("OpenTicket", request, identity, idempotent=False)

    async def get_ticket(self, identity: Identity, request: pb.GetTicketRequest) -> pb.GetTicketResponse:
        """``GetTicket``."""
        return await self._unary("GetTicket", request, identity, idempotent=True)

    async def list_tickets(self, identity: Identity, request: pb.ListTicketsRequest) -> pb.ListTicketsResponse:
        """``ListTickets``."""
        return await self._unary("ListTickets", request, identity, idempotent=True)
