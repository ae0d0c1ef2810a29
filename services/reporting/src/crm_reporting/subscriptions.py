"""The durable consumers of the reporting service, in one place (it publishes nothing: ``events`` says so)."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from crm.customer.v1 import events_pb2 as customer_events
from crm_platform.inbox import Event, Subscription
from crm_platform.org import org_subscription
from crm_reporting.store import count_customer, uncount_customer

log = logging.getLogger(__name__)

CUSTOMER_CREATED = "crm.customer.customer.created"
CUSTOMER_MERGED = "crm.customer.customer.merged"
CUSTOMER_ERASED = "crm.customer.customer.erased"


async def on_customer_created(session: AsyncSession, event: Event) -> None:
    """Count a new customer for its branch (the inbox makes a redelivery a no-op)."""
    payload = event.payload
    assert isinstance(payload, customer_events.CustomerCreated)
    if not payload.branch_id:
        # The customer service never emits one; a customer of no branch has no row to be counted in.
        log.warning("customer without a branch not counted", extra={"event_id": event.id})
        return
    await count_customer(session, branch_id=payload.branch_id, region=payload.region)


async def on_customer_merged(session: AsyncSession, event: Event) -> None:
    """A duplicate file went into its survivor: one customer fewer in the duplicate's branch."""
    payload = event.payload
    assert isinstance(payload, customer_events.CustomerMerged)
    branch_id = payload.duplicate_branch_id or payload.branch_id
    if branch_id:
        await uncount_customer(session, branch_id=branch_id)


async def on_customer_erased(session: AsyncSession, event: Event) -> None:
    """A removed customer (a rolled-back import's) leaves its branch's count; a lawful erasure keeps the
    customer's non-personal facts, and its place in the count."""
    payload = event.payload
    assert isinstance(payload, customer_events.CustomerErased)
    if payload.removed and payload.branch_id:
        await uncount_customer(session, branch_id=payload.branch_id)


def subscriptions() -> list[Subscription]:
    """Customer events feed the per-branch customer counts; identity events keep the org directory."""
    return [
        org_subscription("reporting"),
        Subscription(
            durable="reporting-customer-events",
            stream="CRM_CUSTOMER",
            subject="crm.customer.customer.>",
            handlers={
                CUSTOMER_CREATED: on_customer_created,
                CUSTOMER_MERGED: on_customer_merged,
                CUSTOMER_ERASED: on_customer_erased,
            },
        ),
    ]
