"""Typed client of the reporting service (``crm.reporting.v1.ReportingService``)."""

from __future__ import annotations

from crm.reporting.v1 import reporting_service_pb2 as pb
from crm.reporting.v1 import reporting_service_pb2_grpc
from crm_platform.auth_context import Identity
from crm_platform.clients.base import ServiceClient


class ReportingClient(ServiceClient):
    """The reporting service (``crm.reporting.v1.ReportingService``).

    Reads are retried on UNAVAILABLE; writes are not.
    """

    service = "reporting"
    stub_class = reporting_service_pb2_grpc.ReportingServiceStub

    async def get_customer_counts(
        self, identity: Identity, request: pb.GetCustomerCountsRequest
    ) -> pb.GetCustomerCountsResponse:
        """``GetCustomerCounts``."""
        return await self._unary("GetCustomerCounts", request, identity, idempotent=True)
