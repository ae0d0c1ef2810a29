"""Reporting rules: who may read which branches' figures. No gRPC, SQL or NATS here."""

from __future__ import annotations

from dataclasses import dataclass

from crm_platform.auth_context import Identity, Scope
from crm_platform.errors import PermissionDenied


@dataclass(frozen=True)
class BranchCount:
    """How many customer files a branch holds."""

    branch_id: str
    region: str
    customers: int


@dataclass(frozen=True)
class CountScope:
    """Which branches' counts a caller may read: every branch (both unset), one region's, or one branch's."""

    region: str | None = None
    branch_id: str | None = None


def count_scope(identity: Identity) -> CountScope:
    """The branches whose customer counts the caller may read.

    A count describes a whole branch, so it needs branch scope or wider: a team or own scope would learn about
    customers outside it. A scope lacking the region or branch it needs is refused rather than widened.
    """
    if not identity.has("report:read"):
        raise PermissionDenied("caller may not read reports")
    match identity.scope:
        case Scope.ALL:
            return CountScope()
        case Scope.REGION if identity.region:
            return CountScope(region=identity.region)
        case Scope.BRANCH if identity.branch_id:
            return CountScope(branch_id=identity.branch_id)
        case Scope.REGION | Scope.BRANCH:
            raise PermissionDenied("caller's scope names no region or branch")
        case _:
            raise PermissionDenied("branch counts need branch scope or wider")
