"""The durable consumers of the customer service, in one place."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncSession

from crm.interaction.v1 import events_pb2 as interaction_events
from crm_customer.store.contacts import record_contact
from crm_customer.store.ownership import move_owner_team
from crm_platform.inbox import Event, Subscription
from crm_platform.org import org_subscription

# Consumed: a logged contact moves the customer's last contact forward.
INTERACTION_LOGGED = "crm.interaction.interaction.logged"


async def on_interaction_logged(session: AsyncSession, event: Event) -> None:
    """A contact was logged: the customer's last contact moves forward to when the contact took place (the
    payload's ``occurred_at``; for an event published before it carried one, when it was logged)."""
    payload = event.payload
    assert isinstance(payload, interaction_events.InteractionLogged)
    contacted = payload.occurred_at.ToDatetime(tzinfo=dt.UTC) if payload.HasField("occurred_at") else None
    await record_contact(session, payload.customer_id, contacted or event.occurred_at)


def subscriptions() -> list[Subscription]:
    """``customer-last-contact`` (interaction events → ``customers.last_contact_at``) and the org directory
    (identity events; a user's team move carries the customers they own to the new team)."""
    return [
        org_subscription("customer", move_team=move_owner_team),
        Subscription(
            durable="customer-last-contact",
            stream="CRM_INTERACTION",
            subject=INTERACTION_LOGGED,
            handlers={INTERACTION_LOGGED: on_interaction_logged},
        ),
    ]
