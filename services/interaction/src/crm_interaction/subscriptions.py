"""The durable consumers of the interaction service, in one place."""

from __future__ import annotations

from crm_interaction.store import SEALED_SUMMARY, interactions
from crm_platform.directory import directory_subscription
from crm_platform.inbox import Subscription
from crm_platform.org import org_subscription
from crm_platform.pii.keys import CustomerKeys


def subscriptions(keys: CustomerKeys) -> list[Subscription]:
    """Customer events keep the local customer directory (for data scope) current — a merged duplicate customer's
    interactions move to its survivor, an erased customer's data key here is shredded; identity events keep the org
    directory (a user's team move carries their customers' ``team_id`` along)."""
    return [
        directory_subscription(
            "interaction",
            merged_records=(interactions.c.customer_id,),
            sealed=[SEALED_SUMMARY],
            keys=keys,
        ),
        org_subscription("interaction"),
    ]
