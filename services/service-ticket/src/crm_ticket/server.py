"""Wiring of the ticket service: settings → store → servicer → relay and consumers → serve."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from crm.ticket.v1 import ticket_service_pb2, ticket_service_pb2_grpc
from crm_platform.pii.keys import seal_legacy_texts
from crm_platform.runtime import Context, ServiceSpec
from crm_ticket import subscriptions
from crm_ticket.config import Settings
from crm_ticket.servicer import TicketServicer
from crm_ticket.store import SEALED_DESCRIPTION, TicketStore


def wire(server: grpc.aio.Server, ctx: Context) -> Sequence[str]:
    """Register the servicer; return the served service names."""
    servicer = TicketServicer(TicketStore(ctx.sessions, ctx.outbox, ctx.directory, ctx.keys))
    ticket_service_pb2_grpc.add_TicketServiceServicer_to_server(servicer, server)
    # Texts stored in the clear before the service sealed them are sealed once, in the background.
    ctx.background.append(
        asyncio.create_task(seal_legacy_texts(ctx.sessions, ctx.keys, SEALED_DESCRIPTION), name="seal-legacy-texts")
    )
    return [ticket_service_pb2.DESCRIPTOR.services_by_name["TicketService"].full_name]


SPEC = ServiceSpec(
    domain="ticket",
    package="crm_ticket",
    settings_class=Settings,
    wire=wire,
    subscriptions=lambda ctx: subscriptions.subscriptions(ctx.keys),
)
