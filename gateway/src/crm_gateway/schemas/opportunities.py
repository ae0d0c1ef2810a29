"""Bodies of the opportunity routes."""

from __future__ import annotations

import msgspec

from crm.opportunity.v1 import opportunity_pb2
from crm_gateway.schemas.common import Money, rfc3339

STAGE_FROM_PROTO = {
    opportunity_pb2.STAGE_INITIAL_CONTACT: "initial_contact",
    opportunity_pb2.STAGE_NEEDS_ANALYSIS: "needs_analysis",
    opportunity_pb2.STAGE_PROPOSAL: "proposal",
    opportunity_pb2.STAGE_NEGOTIATION: "negotiation",
    opportunity_pb2.STAGE_WON: "won",
    opportunity_pb2.STAGE_LOST: "lost",
}


class OpportunityOut(msgspec.Struct):
    """A sales opportunity with a customer."""

    id: str
    customer_id: str
    name: str
    stage: str
    expected_amount: Money
    owner_id: str
    created_at: str
    updated_at: str

    @classmethod
    def from_proto(cls, o: opportunity_pb2.Opportunity) -> OpportunityOut:
        """Map the service's message to the HTTP shape."""
        return cls(
            id=o.id,
            customer_id=o.customer_id,
            name=o.name,
            stage=STAGE_FROM_PROTO.get(o.stage, "unspecified"),
            expected_amount=Money.from_proto(o.expected_amount),
            owner_id=o.owner_id,
            created_at=rfc3339(o.created_at),
            updated_at=rfc3339(o.updated_at),
        )
