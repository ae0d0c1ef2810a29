"""Data scope as a query condition: every service filters its own queries with it (defence in depth)."""

from __future__ import annotations

from sqlalchemy import ColumnElement, false, true
from sqlalchemy.sql.elements import ColumnClause

from crm_platform.auth_context import Identity, Scope


def scope_condition(
    identity: Identity,
    *,
    owner: ColumnClause[str] | ColumnElement[str],
    team: ColumnClause[str] | ColumnElement[str],
    branch: ColumnClause[str] | ColumnElement[str],
    region: ColumnClause[str] | ColumnElement[str],
) -> ColumnElement[bool]:
    """The WHERE condition that keeps only rows inside the caller's scope.

    A customer's team is its owner's team; an unowned customer (branch pool) is seen from branch scope up.
    An identity lacking the attribute its scope needs sees nothing rather than everything.
    """
    match identity.scope:
        case Scope.ALL:
            return true()
        case Scope.REGION if identity.region:
            return region == identity.region
        case Scope.BRANCH if identity.branch_id:
            return branch == identity.branch_id
        case Scope.TEAM if identity.team_id:
            return team == identity.team_id
        case Scope.OWN if identity.user_id:
            return owner == identity.user_id
        case _:
            return false()


def in_scope(identity: Identity, *, owner: str, team: str, branch: str, region: str) -> bool:
    """The same rule as :func:`scope_condition`, for one record already in memory."""
    match identity.scope:
        case Scope.ALL:
            return True
        case Scope.REGION:
            return bool(identity.region) and region == identity.region
        case Scope.BRANCH:
            return bool(identity.branch_id) and branch == identity.branch_id
        case Scope.TEAM:
            return bool(identity.team_id) and team == identity.team_id
        case Scope.OWN:
            return bool(identity.user_id) and owner == identity.user_id
        case _:
            return False
