"""Ownership (管户): assignment within the branch or team, reclaim to the branch pool; erasure's remainder."""

from __future__ import annotations

from dataclasses import dataclass

from crm_customer.domain.customer import _SELF_OWNING_ROLES, Customer, Profile, require
from crm_platform.auth_context import Identity, Scope
from crm_platform.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from crm_platform.validation import collect


@dataclass(frozen=True)
class Ownership:
    """Who owns a customer: the owner, the owner's team, and the customer's branch and region."""

    owner_id: str
    team_id: str
    branch_id: str
    region: str


_WIDE_SCOPES = frozenset({Scope.BRANCH, Scope.REGION, Scope.ALL})


def plan_assignment(
    identity: Identity,
    customer: Customer,
    owner_id: str,
    owner_team_id: str,
    owner_branch_id: str,
    owner_roles: tuple[str, ...],
    reason: str,
) -> Ownership:
    """Decide a (re)assignment: the branch head within the branch, a team lead within the team.

    The customer is already known to be in the caller's scope; the new owner must hold an owning role and work
    in the customer's branch (and, for a team lead, in the lead's team).
    """
    require(identity, "customer:assign")
    with collect() as v:
        if not owner_id.strip():
            v.add("owner_id", "is required")
        elif not _SELF_OWNING_ROLES.intersection(owner_roles):
            v.add("owner_id", "is not an RM or teller who can own customers")
        elif owner_branch_id != customer.branch_id:
            v.add("owner_id", "works in another branch than the customer's")
        if len(reason) > 500:
            v.add("reason", "must be at most 500 characters")
    within_team = identity.scope is Scope.TEAM and bool(identity.team_id) and owner_team_id == identity.team_id
    if identity.scope not in _WIDE_SCOPES and not within_team:
        raise PermissionDenied("a team lead assigns only within the team; the branch head within the branch")
    if owner_id == customer.owner_id:
        raise FailedPrecondition("the customer is already owned by that user", reason="ALREADY_OWNER")
    return Ownership(owner_id, owner_team_id, customer.branch_id, customer.region)


def plan_reclaim(identity: Identity, customer: Customer, reason: str) -> Ownership:
    """Decide a reclaim to the branch pool (二次分配 starts here): the branch head's call."""
    require(identity, "customer:assign")
    if identity.scope not in _WIDE_SCOPES:
        raise PermissionDenied("only the branch head reclaims customers to the branch pool")
    with collect() as v:
        if len(reason) > 500:
            v.add("reason", "must be at most 500 characters")
    if not customer.owner_id:
        raise FailedPrecondition("the customer is already in the branch pool", reason="ALREADY_IN_POOL")
    return Ownership("", "", customer.branch_id, customer.region)


ERASED_NAME = "[erased]"


def erased_profile(profile: Profile) -> Profile:
    """What stays of a profile after erasure: the non-personal facts reports count (tier, channel, risk class)."""
    return Profile(
        name=ERASED_NAME,
        tier=profile.tier,
        source_channel=profile.source_channel,
        risk_appetite=profile.risk_appetite,
        industry=profile.industry,
        credit_code=profile.credit_code,
    )


MAX_BULK = 500


@dataclass(frozen=True)
class BulkItem:
    """One customer of a bulk assignment: the planned ownership, or why it is not assigned."""

    customer_id: str
    outcome: str  # assigned, not_found, forbidden, invalid, already_owner (conflict is the store's)
    ownership: Ownership | None = None
    customer: Customer | None = None
    message: str = ""
    violations: tuple[tuple[str, str], ...] = ()


def check_bulk_ids(customer_ids: list[str]) -> list[str]:
    """The asked ids, validated: 1..500, none empty, no repeats."""
    ids = [c.strip() for c in customer_ids]
    with collect() as v:
        if not ids or len(ids) > MAX_BULK:
            v.add("customer_ids", f"names 1 to {MAX_BULK} customers")
        elif any(not c for c in ids):
            v.add("customer_ids", "holds an empty id")
        elif len(set(ids)) != len(ids):
            v.add("customer_ids", "names a customer twice")
    return ids


def plan_bulk_assignment(
    identity: Identity,
    customer_ids: list[str],
    visible: dict[str, Customer],
    owner_id: str,
    owner_team_id: str,
    owner_branch_id: str,
    owner_roles: tuple[str, ...],
    reason: str,
) -> list[BulkItem]:
    """Plan each customer as :func:`plan_assignment` would; a customer outside the caller's scope is not_found.

    A refusal that holds for every customer (no permission, a bad reason) refuses the whole request instead.
    """
    require(identity, "customer:assign")
    with collect() as v:
        if not owner_id.strip():
            v.add("owner_id", "is required")
        if len(reason) > 500:
            v.add("reason", "must be at most 500 characters")
    items: list[BulkItem] = []
    for customer_id in customer_ids:
        customer = visible.get(customer_id)
        if customer is None:
            items.append(BulkItem(customer_id, "not_found", message="no such customer in your scope"))
            continue
        if customer.erased_at is not None:
            items.append(BulkItem(customer_id, "invalid", message="the customer was erased", customer=customer))
            continue
        try:
            ownership = plan_assignment(
                identity, customer, owner_id, owner_team_id, owner_branch_id, owner_roles, reason
            )
        except PermissionDenied as exc:
            items.append(BulkItem(customer_id, "forbidden", message=str(exc), customer=customer))
        except InvalidArgument as exc:
            found = tuple((x.field, x.description) for x in exc.violations)
            items.append(
                BulkItem(customer_id, "invalid", message="the owner cannot own this customer", violations=found)
            )
        except FailedPrecondition as exc:
            items.append(BulkItem(customer_id, "already_owner", message=str(exc), customer=customer))
        else:
            items.append(BulkItem(customer_id, "assigned", ownership=ownership, customer=customer))
    return items
