"""Wiring of the reporting service: settings → store → servicer → consumers → serve."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from crm.reporting.v1 import reporting_service_pb2, reporting_service_pb2_grpc
from crm_platform.runtime import Context, ServiceSpec
from crm_reporting import subscriptions
from crm_reporting.config import Settings
from crm_reporting.servicer import ReportingServicer
from crm_reporting.store import ReportStore


def wire(server: grpc.aio.Server, ctx: Context) -> Sequence[str]:
    """Register the servicer; return the served service names."""
    servicer = ReportingServicer(ReportStore(ctx.sessions))
    reporting_service_pb2_grpc.add_ReportingServiceServicer_to_server(servicer, server)
    return [reporting_service_pb2.DESCRIPTOR.services_by_name["ReportingService"].full_name]


SPEC = ServiceSpec(
    domain="reporting",
    package="crm_reporting",
    settings_class=Settings,
    wire=wire,
    subscriptions=lambda _ctx: subscriptions.subscriptions(),
)
