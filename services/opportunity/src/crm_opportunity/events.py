"""What the opportunity service publishes (its consumers are in ``subscriptions``)."""

from __future__ import annotations

from crm.common.v1 import money_pb2
from crm.opportunity.v1 import events_pb2, opportunity_pb2
from crm_opportunity.domain import Opportunity

OPPORTUNITY_CREATED = "crm.opportunity.opportunity.created"

STAGE_TO_PROTO = {
    "initial_contact": opportunity_pb2.STAGE_INITIAL_CONTACT,
    "needs_analysis": opportunity_pb2.STAGE_NEEDS_ANALYSIS,
    "proposal": opportunity_pb2.STAGE_PROPOSAL,
    "negotiation": opportunity_pb2.STAGE_NEGOTIATION,
    "won": opportunity_pb2.STAGE_WON,
    "lost": opportunity_pb2.STAGE_LOST,
}


def money(opportunity: Opportunity) -> money_pb2.Money:
    """The expected amount as the shared Money message, always with two decimals (``"500000.00"``)."""
    return money_pb2.Money(amount=f"{opportunity.expected_amount:.2f}", currency=opportunity.currency)


def opportunity_created(opportunity: Opportunity) -> events_pb2.OpportunityCreated:
    """The ``opportunity.created`` payload (no name: it often holds the customer's name)."""
    return events_pb2.OpportunityCreated(
        opportunity_id=opportunity.id,
        customer_id=opportunity.customer_id,
        owner_id=opportunity.owner_id,
        expected_amount=money(opportunity),
    )
