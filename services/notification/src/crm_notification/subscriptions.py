"""The durable consumers of the notification service, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from crm.customer.v1 import events_pb2 as customer_events
from crm.identity.v1 import events_pb2 as identity_events
from crm_notification.domain import customer_assigned, customer_merged, customer_reassigned
from crm_platform.inbox import Event, Subscription
from crm_platform.org import org_subscription, remember_staff_contact
from crm_platform.outbox import utcnow

if TYPE_CHECKING:
    from crm_notification.store import InboxStore

CUSTOMER_CREATED = "crm.customer.customer.created"
CUSTOMER_ASSIGNED = "crm.customer.customer.assigned"
CUSTOMER_MERGED = "crm.customer.customer.merged"
STAFF_CONTACT_CHANGED = "crm.identity.user.contact_changed"


async def on_staff_contact_changed(session: AsyncSession, event: Event) -> None:
    """Keep a staff member's sealed e-mail and mobile (opened only when a message is sent to them)."""
    payload = event.payload
    assert isinstance(payload, identity_events.StaffContactChanged)
    await remember_staff_contact(session, payload.user_id, payload.sealed, event.occurred_at)


def subscriptions(inbox: InboxStore) -> list[Subscription]:
    """Customer events become inbox messages; ``inbox`` writes them (and their events) in the handler's transaction."""

    async def on_customer_created(session: AsyncSession, event: Event) -> None:
        """Tell a new customer's owner, in their inbox, that the customer is theirs."""
        payload = event.payload
        assert isinstance(payload, customer_events.CustomerCreated)
        message = customer_assigned(payload.customer_id, payload.owner_id, utcnow())
        if message is not None:
            await inbox.deliver(session, message, actor=event.actor)

    async def on_customer_assigned(session: AsyncSession, event: Event) -> None:
        """Tell the new owner of a reassigned customer (not one who took it themselves)."""
        payload = event.payload
        assert isinstance(payload, customer_events.CustomerAssigned)
        message = customer_reassigned(
            payload.customer_id, payload.owner_id, payload.previous_owner_id, event.actor, utcnow()
        )
        if message is not None:
            await inbox.deliver(session, message, actor=event.actor)

    async def on_customer_merged(session: AsyncSession, event: Event) -> None:
        """Tell the owners of a merged duplicate and of its survivor (not the one who merged them)."""
        payload = event.payload
        assert isinstance(payload, customer_events.CustomerMerged)
        for message in customer_merged(
            payload.survivor_id,
            payload.duplicate_id,
            payload.survivor_owner_id,
            payload.duplicate_owner_id,
            payload.actor or event.actor,
            utcnow(),
        ):
            await inbox.deliver(session, message, actor=event.actor)

    return [
        org_subscription("notification", extra={STAFF_CONTACT_CHANGED: on_staff_contact_changed}),
        Subscription(
            durable="notification-customer-events",
            stream="CRM_CUSTOMER",
            subject="crm.customer.customer.>",
            handlers={
                CUSTOMER_CREATED: on_customer_created,
                CUSTOMER_ASSIGNED: on_customer_assigned,
                CUSTOMER_MERGED: on_customer_merged,
            },
        ),
    ]
