"""Typed client of the opportunity service (``crm.opportunity.v1.OpportunityService``)."""

from __future__ import annotations

from crm.opportunity.v1 import opportunity_service_pb2 as pb
from crm.opportunity.v1 import opportunity_service_pb2_grpc
from crm_platform.auth_context import Identity
from crm_platform.clients.base import ServiceClient


class OpportunityClient(ServiceClient):
    """The opportunity service (``crm.opportunity.v1.OpportunityService``).

    Reads are retried on UNAVAILABLE; writes are not.
    """

    service = "opportunity"
    stub_class = opportunity_service_pb2_grpc.OpportunityServiceStub

    async def create_opportunity(
        self, identity: Identity, request: pb.CreateOpportunityRequest
    ) -> pb.CreateOpportunityResponse:
        """``CreateOpportunity``."""
        return await self._unary("CreateOpportunity", request, identity, idempotent=False)

    async def get_opportunity(self, identity: Identity, request: pb.GetOpportunityRequest) -> pb.GetOpportunityResponse:
        """``GetOpportunity``."""
        return await self._unary("GetOpportunity", request, identity, idempotent=True)

    async def list_opportunities(
        self, identity: Identity, request: pb.ListOpportunitiesRequest
    ) -> pb.ListOpportunitiesResponse:
        """``ListOpportunities``."""
        return await self._unary("ListOpportunities", request, identity, idempotent=True)
