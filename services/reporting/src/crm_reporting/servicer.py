"""gRPC ``crm.reporting.v1.ReportingService``: protobuf in, domain call, protobuf out. No SQL here."""

from __future__ import annotations

from typing import Any

from crm.reporting.v1 import reporting_pb2, reporting_service_pb2, reporting_service_pb2_grpc
from crm_platform.auth_context import current_identity
from crm_platform.grpc_server import declare_permissions
from crm_reporting.domain import count_scope
from crm_reporting.store import ReportStore


class ReportingServicer(reporting_service_pb2_grpc.ReportingServiceServicer):
    """Translates ReportingService calls; errors map to status codes in the shared interceptor."""

    def __init__(self, store: ReportStore) -> None:
        self._store = store

    async def GetCustomerCounts(  # noqa: N802
        self, request: Any, context: Any
    ) -> reporting_service_pb2.GetCustomerCountsResponse:
        """See the proto."""
        counts = await self._store.customer_counts(count_scope(current_identity()))
        return reporting_service_pb2.GetCustomerCountsResponse(
            counts=[reporting_pb2.BranchCustomerCount(branch_id=c.branch_id, customers=c.customers) for c in counts]
        )


# The permission each method needs: the server refuses callers without it and applies its scope.
declare_permissions(
    reporting_service_pb2.DESCRIPTOR.services_by_name["ReportingService"],
    {
        "GetCustomerCounts": "report:read",
    },
)
