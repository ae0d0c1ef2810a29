"""Wiring of the ticket service: settings → store → servicer → relay and consumers → serve."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from crm.ticket.v1 import ticket_service_pb2, ticket_service_pb2_grpc
from crm_platform.runtime import Context, ServiceSpec
from crm_ticket import events
from crm_ticket.config import Settings
from crm_ticket.servicer import TicketServicer
from crm_ticket.store import TicketStore


def wire(server: grpc.aio.Server, ctx: Context) -> Sequence[str]:
    """Register the servicer; return the served service names."""
    servicer = TicketServicer(TicketStore(ctx.sessions, ctx.outbox))
    ticket_service_pb2_grpc.add_TicketServiceServicer_to_server(servicer, server)
    return [ticket_service_pb2.DESCRIPTOR.services_by_name["TicketService"].full_name]


SPEC = ServiceSpec(
    domain="ticket",
    package="crm_ticket",
    settings_class=Settings,
    wire=wire,
    subscriptions=lambda _ctx: events.subscriptions(),
)
