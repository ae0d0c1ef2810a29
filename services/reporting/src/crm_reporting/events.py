"""The durable consumers of the reporting service. It publishes nothing (its outbox carries only dead letters)."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from crm.customer.v1 import events_pb2 as customer_events
from crm_platform.inbox import Event, Subscription
from crm_reporting.store import count_customer

log = logging.getLogger(__name__)

CUSTOMER_CREATED = "crm.customer.customer.created"


async def on_customer_created(session: AsyncSession, event: Event) -> None:
    """Count a new customer for its branch (the inbox makes a redelivery a no-op)."""
    payload = event.payload
    assert isinstance(payload, customer_events.CustomerCreated)
    if not payload.branch_id:
        # The customer service never emits one; a customer of no branch has no row to be counted in.
        log.warning("customer without a branch not counted", extra={"event_id": event.id})
        return
    await count_customer(session, branch_id=payload.branch_id, region=payload.region)


def subscriptions() -> list[Subscription]:
    """Customer events feed the per-branch customer counts."""
    return [
        Subscription(
            durable="reporting-customer-events",
            stream="CRM_CUSTOMER",
            subject="crm.customer.customer.>",
            handlers={CUSTOMER_CREATED: on_customer_created},
        )
    ]
