"""Ownership (管户): assignment within the branch or team, reclaim to the branch pool; erasure's remainder."""

from __future__ import annotations

from dataclasses import dataclass

from crm_customer.domain.customer import _SELF_OWNING_ROLES, Customer, Profile, require
from crm_platform.auth_context import Identity, Scope
from crm_platform.errors import FailedPrecondition, PermissionDenied
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
