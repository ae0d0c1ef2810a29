"""Wiring of the interaction service: settings → store → servicer → relay and consumers → serve."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from crm.interaction.v1 import interaction_service_pb2, interaction_service_pb2_grpc
from crm_interaction import subscriptions
from crm_interaction.config import Settings
from crm_interaction.servicer import InteractionServicer
from crm_interaction.store import SEALED_SUMMARY, InteractionStore
from crm_platform.pii.keys import seal_legacy_texts
from crm_platform.runtime import Context, ServiceSpec


def wire(server: grpc.aio.Server, ctx: Context) -> Sequence[str]:
    """Register the servicer; return the served service names."""
    servicer = InteractionServicer(InteractionStore(ctx.sessions, ctx.outbox, ctx.directory, ctx.keys))
    interaction_service_pb2_grpc.add_InteractionServiceServicer_to_server(servicer, server)
    # Texts stored in the clear before the service sealed them are sealed once, in the background.
    ctx.background.append(
        asyncio.create_task(seal_legacy_texts(ctx.sessions, ctx.keys, SEALED_SUMMARY), name="seal-legacy-texts")
    )
    return [interaction_service_pb2.DESCRIPTOR.services_by_name["InteractionService"].full_name]


SPEC = ServiceSpec(
    domain="interaction",
    package="crm_interaction",
    settings_class=Settings,
    wire=wire,
    subscriptions=lambda ctx: subscriptions.subscriptions(ctx.keys),
)
