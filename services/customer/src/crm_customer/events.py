"""What the customer service publishes (and, later, consumes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from crm.customer.v1 import customer_pb2, events_pb2
from crm_platform.inbox import Subscription

if TYPE_CHECKING:
    from crm_customer.domain import Customer

CUSTOMER_CREATED = "crm.customer.customer.created"

KIND_TO_PROTO = {
    "individual": customer_pb2.CUSTOMER_KIND_INDIVIDUAL,
    "corporate": customer_pb2.CUSTOMER_KIND_CORPORATE,
}


def customer_created(customer: Customer) -> events_pb2.CustomerCreated:
    """The ``customer.created`` payload: ids and ownership only, never personal data."""
    return events_pb2.CustomerCreated(
        customer_id=customer.id,
        kind=KIND_TO_PROTO[customer.kind.value],
        owner_id=customer.owner_id,
        branch_id=customer.branch_id,
        team_id=customer.team_id,
        region=customer.region,
    )


def subscriptions() -> list[Subscription]:
    """The customer service consumes nothing yet (identity events arrive with the gateway's identity store)."""
    return []
