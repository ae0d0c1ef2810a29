"""Customer rules: what a valid new customer is and who owns it. No gRPC, SQL or NATS here."""

from __future__ import annotations

import datetime as dt
import enum
import secrets
from dataclasses import dataclass

from crm_platform.auth_context import Identity
from crm_platform.errors import PermissionDenied
from crm_platform.ids import new_id
from crm_platform.validation import collect

# Roles whose new customers they own themselves; others create into the branch pool.
_SELF_OWNING_ROLES = frozenset({"rm", "teller", "team_lead", "branch_head"})
_CREATE_PERMISSIONS = ("customer:create", "customer:write")


class CustomerKind(enum.StrEnum):
    """Individual or corporate."""

    INDIVIDUAL = "individual"
    CORPORATE = "corporate"


@dataclass(frozen=True)
class Customer:
    """A customer file's core facts."""

    id: str
    customer_no: str
    kind: CustomerKind
    name: str
    owner_id: str
    team_id: str
    branch_id: str
    region: str
    version: int
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime


def new_customer_no(now: dt.datetime) -> str:
    """A bank customer number: ``C`` + date + 8 random digits (unique index catches the rare clash)."""
    return f"C{now:%y%m%d}{secrets.randbelow(10**8):08d}"


def register_customer(identity: Identity, kind: str | None, name: str, now: dt.datetime) -> Customer:
    """Validate a new customer and decide its owner: the creating RM or teller, else the branch pool."""
    if not any(identity.has(p) for p in _CREATE_PERMISSIONS):
        raise PermissionDenied("caller may not create customers")
    with collect() as violations:
        clean_name = violations.require_text("name", name, max_length=100)
        if kind not in {k.value for k in CustomerKind}:
            violations.add("kind", "must be individual or corporate")
        if not identity.branch_id:
            violations.add("branch_id", "caller belongs to no branch")
    self_owned = bool(_SELF_OWNING_ROLES.intersection(identity.roles))
    return Customer(
        id=new_id(),
        customer_no=new_customer_no(now),
        kind=CustomerKind(kind),
        name=clean_name,
        owner_id=identity.user_id if self_owned else "",
        team_id=identity.team_id if self_owned else "",
        branch_id=identity.branch_id,
        region=identity.region,
        version=1,
        created_by=identity.user_id,
        created_at=now,
        updated_at=now,
    )
