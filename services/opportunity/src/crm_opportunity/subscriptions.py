"""The durable consumers of the opportunity service, in one place."""

from __future__ import annotations

from crm_opportunity.store import opportunities
from crm_platform.directory import directory_subscription
from crm_platform.inbox import Subscription
from crm_platform.org import org_subscription
from crm_platform.pii.keys import CustomerKeys


def subscriptions(keys: CustomerKeys) -> list[Subscription]:
    """Customer events keep the local customer directory (for data scope) current — a merged duplicate customer's
    opportunities move to its survivor, an erased customer's data key here is shredded; identity events keep the org
    directory (a user's team move carries their customers' ``team_id`` along)."""
    return [
        directory_subscription("opportunity", merged_records=(opportunities.c.customer_id,), keys=keys),
        org_subscription("opportunity"),
    ]
