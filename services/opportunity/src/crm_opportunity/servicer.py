"""gRPC ``crm.opportunity.v1.OpportunityService``: protobuf in, domain call, protobuf out. No SQL here."""

from __future__ import annotations

from typing import Any

from crm.common.v1 import paging_pb2
from crm.opportunity.v1 import opportunity_pb2, opportunity_service_pb2, opportunity_service_pb2_grpc
from crm_opportunity.domain import Opportunity, ensure_may_read, open_opportunity
from crm_opportunity.events import STAGE_TO_PROTO, money
from crm_opportunity.store import OpportunityStore
from crm_platform.auth_context import current_identity
from crm_platform.grpc_server import declare_permissions
from crm_platform.idempotency import fingerprint
from crm_platform.outbox import utcnow
from crm_platform.paging import after_id, page_limit
from crm_platform.protobuf import timestamp


def to_proto(item: Opportunity) -> opportunity_pb2.Opportunity:
    """The wire form of an opportunity."""
    return opportunity_pb2.Opportunity(
        id=item.id,
        customer_id=item.customer_id,
        name=item.name,
        stage=STAGE_TO_PROTO[item.stage.value],
        expected_amount=money(item),
        owner_id=item.owner_id,
        created_at=timestamp(item.created_at),
        updated_at=timestamp(item.updated_at),
    )


class OpportunityServicer(opportunity_service_pb2_grpc.OpportunityServiceServicer):
    """Translates OpportunityService calls; errors map to status codes in the shared interceptor."""

    def __init__(self, store: OpportunityStore) -> None:
        self._store = store

    async def CreateOpportunity(  # noqa: N802
        self, request: Any, context: Any
    ) -> opportunity_service_pb2.CreateOpportunityResponse:
        """See the proto."""
        identity = current_identity()
        opportunity = open_opportunity(
            identity,
            request.customer_id,
            request.name,
            request.expected_amount.amount,
            request.expected_amount.currency,
            utcnow(),
        )
        stored = await self._store.create(identity, opportunity, request.request_id, fingerprint(request))
        return opportunity_service_pb2.CreateOpportunityResponse(opportunity=to_proto(stored))

    async def GetOpportunity(self, request: Any, context: Any) -> opportunity_service_pb2.GetOpportunityResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        ensure_may_read(identity)
        opportunity = await self._store.get(identity, request.opportunity_id)
        return opportunity_service_pb2.GetOpportunityResponse(opportunity=to_proto(opportunity))

    async def ListOpportunities(  # noqa: N802
        self, request: Any, context: Any
    ) -> opportunity_service_pb2.ListOpportunitiesResponse:
        """See the proto."""
        identity = current_identity()
        ensure_may_read(identity)
        items, next_token = await self._store.list_for_customer(
            identity,
            request.customer_id,
            open_only=request.open_only,
            limit=page_limit(request.page),
            after_id=after_id(request.page),
        )
        return opportunity_service_pb2.ListOpportunitiesResponse(
            opportunities=[to_proto(i) for i in items], page=paging_pb2.PageInfo(next_page_token=next_token)
        )


# The permission each method needs: the server refuses callers without it and applies its scope.
declare_permissions(
    opportunity_service_pb2.DESCRIPTOR.services_by_name["OpportunityService"],
    {
        "CreateOpportunity": "opportunity:write",
        "GetOpportunity": "opportunity:read",
        "ListOpportunities": "opportunity:read",
    },
)
