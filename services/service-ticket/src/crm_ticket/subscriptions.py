"""The durable consumers of the service-ticket service, in one place."""

from __future__ import annotations

from crm_platform.directory import directory_subscription
from crm_platform.inbox import Subscription
from crm_platform.org import org_subscription
from crm_platform.pii.keys import CustomerKeys
from crm_ticket.store import SEALED_DESCRIPTION, tickets


def subscriptions(keys: CustomerKeys) -> list[Subscription]:
    """Customer events keep the local customer directory (for data scope) current — a merged duplicate customer's
    tickets move to its survivor, an erased customer's data key here is shredded; identity events keep the org
    directory (a user's team move carries their customers' ``team_id`` along)."""
    return [
        directory_subscription(
            "ticket",
            merged_records=(tickets.c.customer_id,),
            sealed=[SEALED_DESCRIPTION],
            keys=keys,
        ),
        org_subscription("ticket"),
    ]
