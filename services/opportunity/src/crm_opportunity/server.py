"""Wiring of the opportunity service: settings → store → servicer → relay and consumers → serve."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from crm.opportunity.v1 import opportunity_service_pb2, opportunity_service_pb2_grpc
from crm_opportunity import subscriptions
from crm_opportunity.config import Settings
from crm_opportunity.servicer import OpportunityServicer
from crm_opportunity.store import OpportunityStore
from crm_platform.runtime import Context, ServiceSpec


def wire(server: grpc.aio.Server, ctx: Context) -> Sequence[str]:
    """Register the servicer; return the served service names."""
    servicer = OpportunityServicer(OpportunityStore(ctx.sessions, ctx.outbox, ctx.directory))
    opportunity_service_pb2_grpc.add_OpportunityServiceServicer_to_server(servicer, server)
    return [opportunity_service_pb2.DESCRIPTOR.services_by_name["OpportunityService"].full_name]


SPEC = ServiceSpec(
    domain="opportunity",
    package="crm_opportunity",
    settings_class=Settings,
    wire=wire,
    subscriptions=lambda ctx: subscriptions.subscriptions(ctx.keys),
)
