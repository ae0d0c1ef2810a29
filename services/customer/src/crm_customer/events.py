"""What the customer service publishes (its consumers are in ``subscriptions``). Payloads carry ids, ownership
and field names, never personal values."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from google.protobuf.descriptor import EnumDescriptor

from crm.common.v1 import money_pb2
from crm.customer.v1 import customer_pb2, events_pb2

if TYPE_CHECKING:
    from crm_customer.domain import Customer, HoldingsChange, ManagedTag, MergePlan, Profile

CUSTOMER_CREATED = "crm.customer.customer.created"
CUSTOMER_UPDATED = "crm.customer.customer.updated"
CUSTOMER_ASSIGNED = "crm.customer.customer.assigned"
CUSTOMER_TIER_CHANGED = "crm.customer.customer.tier_changed"
CUSTOMER_ERASED = "crm.customer.customer.erased"
CUSTOMER_TAGGED = "crm.customer.customer.tagged"
CUSTOMER_HOLDINGS_CHANGED = "crm.customer.customer.holdings_changed"
CUSTOMER_MERGED = "crm.customer.customer.merged"
MANAGED_TAG_DEFINED = "crm.customer.managed_tag.defined"

KIND_TO_PROTO = {
    "individual": customer_pb2.CUSTOMER_KIND_INDIVIDUAL,
    "corporate": customer_pb2.CUSTOMER_KIND_CORPORATE,
}


@functools.cache
def _prefix(descriptor: EnumDescriptor) -> str:
    return descriptor.values_by_number[0].name.removesuffix("UNSPECIFIED")


def enum_text(descriptor: EnumDescriptor, number: int) -> str:
    """``GENDER_MALE`` → ``male``; 0 → ``""``; an unknown number → ``"?<n>"`` (which validation refuses)."""
    if number == 0:
        return ""
    value = descriptor.values_by_number.get(number)
    if value is None:
        return f"?{number}"
    return value.name.removeprefix(_prefix(descriptor)).lower()


@functools.cache  # a handful of values per enum; every event and imported row asks
def enum_number(descriptor: EnumDescriptor, text: str) -> int:
    """``male`` → ``GENDER_MALE``'s number; ``""`` → 0."""
    if not text:
        return 0
    return descriptor.values_by_name[_prefix(descriptor) + text.upper()].number


TIER = customer_pb2.Tier.DESCRIPTOR
PRODUCT_TYPE = customer_pb2.ProductType.DESCRIPTOR


def customer_created(customer: Customer) -> events_pb2.CustomerCreated:
    """The ``customer.created`` payload: ids and ownership only, never personal data."""
    return created_payload(
        customer.id,
        customer.kind.value,
        customer.profile,
        customer.branch_id,
        customer.region,
        customer.owner_id,
        customer.team_id,
    )


def created_payload(
    customer_id: str, kind: str, profile: Profile, branch_id: str, region: str, owner_id: str = "", team_id: str = ""
) -> events_pb2.CustomerCreated:
    """:func:`customer_created` from the facts of a customer not built yet (the import prepares thousands)."""
    return events_pb2.CustomerCreated(
        customer_id=customer_id,
        kind=KIND_TO_PROTO[kind],
        owner_id=owner_id,
        branch_id=branch_id,
        team_id=team_id,
        region=region,
        tier=enum_number(TIER, profile.tier),  # type: ignore[arg-type]
        source_channel=enum_number(customer_pb2.SourceChannel.DESCRIPTOR, profile.source_channel),  # type: ignore[arg-type]
        do_not_disturb=profile.do_not_disturb,
    )


CUSTOMER_CREATED_TYPE = events_pb2.CustomerCreated.DESCRIPTOR.full_name


def with_ownership(created: bytes, owner_id: str, team_id: str) -> bytes:
    """A serialized ``customer.created`` payload made without ownership, with it: protobuf parses concatenated
    messages of one type as one message merged, so appending the two fields gives what building the payload with
    them would (the import prepares the rest of each payload before its owner is decided)."""
    return created + _ownership(owner_id, team_id)


@functools.lru_cache(maxsize=1024)  # an import's owners are a team at most: the same few pairs, row after row
def _ownership(owner_id: str, team_id: str) -> bytes:
    return events_pb2.CustomerCreated(owner_id=owner_id, team_id=team_id).SerializeToString()


def customer_updated(customer: Customer, changed_fields: list[str]) -> events_pb2.CustomerUpdated:
    """The ``customer.updated`` payload: which fields changed, never their values; and the facts others keep (tier,
    do-not-disturb), as they stand after the change."""
    return events_pb2.CustomerUpdated(
        customer_id=customer.id,
        changed_fields=changed_fields,
        version=customer.version,
        tier=enum_number(TIER, customer.profile.tier),  # type: ignore[arg-type]
        do_not_disturb=customer.profile.do_not_disturb,
    )


def customer_assigned(customer: Customer, previous_owner_id: str, reason: str) -> events_pb2.CustomerAssigned:
    """The ``customer.assigned`` payload: the new ownership facts every service's directory keeps."""
    return events_pb2.CustomerAssigned(
        customer_id=customer.id,
        owner_id=customer.owner_id,
        team_id=customer.team_id,
        branch_id=customer.branch_id,
        region=customer.region,
        previous_owner_id=previous_owner_id,
        reason=reason,
    )


def tier_changed(customer: Customer, previous_tier: str) -> events_pb2.CustomerTierChanged:
    """The ``customer.tier_changed`` payload."""
    return events_pb2.CustomerTierChanged(
        customer_id=customer.id,
        previous_tier=enum_number(TIER, previous_tier),  # type: ignore[arg-type]
        tier=enum_number(TIER, customer.profile.tier),  # type: ignore[arg-type]
    )


def customer_erased(customer: Customer, *, removed: bool = False) -> events_pb2.CustomerErased:
    """The ``customer.erased`` payload (``removed``: the whole record was deleted, as by an import's rollback)."""
    return events_pb2.CustomerErased(customer_id=customer.id, removed=removed, branch_id=customer.branch_id)


def customer_tagged(
    customer: Customer, added: list[str], removed: list[str], managed: list[str] | None = None
) -> events_pb2.CustomerTagged:
    """The ``customer.tagged`` payload (``managed``: which of the added and removed are catalog tags)."""
    return events_pb2.CustomerTagged(
        customer_id=customer.id, added=added, removed=removed, tags=list(customer.tags), managed=managed or []
    )


def managed_tag_defined(tag: ManagedTag) -> events_pb2.ManagedTagDefined:
    """The ``managed_tag.defined`` payload."""
    return events_pb2.ManagedTagDefined(
        name=tag.name, branch_id=tag.branch_id, applicable_roles=list(tag.applicable_roles)
    )


def holdings_changed(customer: Customer, change: HoldingsChange) -> events_pb2.CustomerHoldingsChanged:
    """The ``customer.holdings_changed`` payload: AUM before and after, and the derived signals."""
    return events_pb2.CustomerHoldingsChanged(
        customer_id=customer.id,
        aum_before=money_pb2.Money(amount=f"{change.aum_before:.2f}", currency="CNY"),
        aum_after=money_pb2.Money(amount=f"{change.aum_after:.2f}", currency="CNY"),
        signals=list(change.signals),
        maturing_product_codes=list(change.maturing),
        eligible_tier=enum_number(TIER, change.eligible_tier),  # type: ignore[arg-type]
        balances=[
            events_pb2.ProductBalance(
                product_type=enum_number(PRODUCT_TYPE, kind),  # type: ignore[arg-type]
                balance=money_pb2.Money(amount=f"{total:.2f}", currency="CNY"),
            )
            for kind, total in change.balances
        ],
        maturities=[
            events_pb2.ProductMaturity(
                product_code=h.product_code,
                product_type=enum_number(PRODUCT_TYPE, h.product_type),  # type: ignore[arg-type]
                maturity_date=h.maturity_date.isoformat() if h.maturity_date else "",
                amount=money_pb2.Money(amount=f"{h.amount:.2f}", currency=h.currency or "CNY"),
            )
            for h in change.maturities
        ],
    )


def customer_merged(plan: MergePlan, moved_product_codes: list[str], actor: str) -> events_pb2.CustomerMerged:
    """The ``customer.merged`` payload: which file went into which, the names of the filled fields (never their
    values), the products that moved and who merged."""
    return events_pb2.CustomerMerged(
        survivor_id=plan.survivor.id,
        duplicate_id=plan.duplicate.id,
        filled_fields=plan.filled_fields,
        actor=actor,
        branch_id=plan.survivor.branch_id,
        moved_product_codes=moved_product_codes,
        duplicate_branch_id=plan.duplicate.branch_id,
        survivor_owner_id=plan.survivor.owner_id,
        duplicate_owner_id=plan.duplicate.owner_id,
    )
