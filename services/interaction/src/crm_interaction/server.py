"""Wiring of the interaction service: settings → store → servicer → relay and consumers → serve."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from crm.interaction.v1 import interaction_service_pb2, interaction_service_pb2_grpc
from crm_interaction import events
from crm_interaction.config import Settings
from crm_interaction.servicer import InteractionServicer
from crm_interaction.store import InteractionStore
from crm_platform.runtime import Context, ServiceSpec


def wire(server: grpc.aio.Server, ctx: Context) -> Sequence[str]:
    """Register the servicer; return the served service names."""
    servicer = InteractionServicer(InteractionStore(ctx.sessions, ctx.outbox))
    interaction_service_pb2_grpc.add_InteractionServiceServicer_to_server(servicer, server)
    return [interaction_service_pb2.DESCRIPTOR.services_by_name["InteractionService"].full_name]


SPEC = ServiceSpec(
    domain="interaction",
    package="crm_interaction",
    settings_class=Settings,
    wire=wire,
    subscriptions=lambda _ctx: events.subscriptions(),
)
