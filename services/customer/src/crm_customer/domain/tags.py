"""Tags on customers (高净值, 潜力客户 …): free tags, and managed tags from a catalog with who may apply them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from crm_customer.domain.customer import Customer, require
from crm_platform.auth_context import Identity
from crm_platform.errors import PermissionDenied
from crm_platform.validation import collect

MAX_TAGS = 30
TAG_LENGTH = 20


def retag(customer: Customer, add: list[str], remove: list[str]) -> tuple[tuple[str, ...], list[str], list[str]]:
    """The customer's tags after adding ``add`` and removing ``remove``: (tags, really added, really removed)."""
    with collect() as v:
        clean_add = [t.strip() for t in add]
        clean_remove = [t.strip() for t in remove]
        if not clean_add and not clean_remove:
            v.add("add", "names no tag to add or remove")
        for name, tags in (("add", clean_add), ("remove", clean_remove)):
            if any(not t or len(t) > TAG_LENGTH or "," in t for t in tags):
                v.add(name, f"tags are 1 to {TAG_LENGTH} characters without commas")
            else:
                for index, tag in enumerate(tags):
                    v.check_text(f"{name}[{index}]", tag)
        result = sorted((set(customer.tags) | set(clean_add)) - set(clean_remove))
        if len(result) > MAX_TAGS:
            v.add("add", f"a customer carries at most {MAX_TAGS} tags")
    added = sorted(set(result) - set(customer.tags))
    removed = sorted(set(customer.tags) - set(result))
    return tuple(result), added, removed


# Roles that edit customers and so may be named as appliers of a managed tag.
TAGGING_ROLES = ("rm", "teller", "team_lead", "branch_head")
DESCRIPTION_LENGTH = 200


@dataclass(frozen=True)
class ManagedTag:
    """An entry of the managed tag catalog: bank-wide (``branch_id`` empty) or one branch's."""

    name: str
    description: str
    applicable_roles: tuple[str, ...]
    branch_id: str
    created_by: str
    created_at: dt.datetime

    def applicable_by(self, identity: Identity) -> bool:
        """Whether the caller holds a role that may apply (and remove) this tag."""
        return not self.applicable_roles or bool(set(self.applicable_roles) & set(identity.roles))


@dataclass(frozen=True)
class TagPlan:
    """The outcome of a tagging request: the new set, what really changed, and which of those are managed."""

    tags: tuple[str, ...]
    added: list[str]
    removed: list[str]
    managed: list[str]


def define_managed_tag(
    identity: Identity, name: str, description: str, applicable_roles: list[str], now: dt.datetime
) -> ManagedTag:
    """Validate a new catalog entry: an administrator defines bank-wide tags, a branch head the branch's own."""
    require(identity, "tag:manage")
    bank_wide = "admin" in identity.roles
    with collect() as v:
        clean = name.strip()
        if not clean or len(clean) > TAG_LENGTH or "," in clean:
            v.add("name", f"is required, 1 to {TAG_LENGTH} characters without commas")
        else:
            v.check_text("name", clean)
        clean_description = description.strip()
        if len(clean_description) > DESCRIPTION_LENGTH:
            v.add("description", f"must be at most {DESCRIPTION_LENGTH} characters")
        roles = tuple(dict.fromkeys(r.strip() for r in applicable_roles))
        if any(r not in TAGGING_ROLES for r in roles):
            v.add("applicable_roles", f"must be among {', '.join(TAGGING_ROLES)}")
        if not bank_wide and not identity.branch_id:
            v.add("branch_id", "caller belongs to no branch")
    return ManagedTag(clean, clean_description, roles, "" if bank_wide else identity.branch_id, identity.user_id, now)


def plan_tagging(
    identity: Identity,
    customer: Customer,
    add: list[str],
    remove: list[str],
    add_managed: list[str],
    catalog: Mapping[str, ManagedTag],
    managed_on_customer: set[str],
) -> TagPlan:
    """Free tags are any text; managed tags only the catalog's names, applied and removed by their roles.

    A free tag may not take a catalog name (it would sidestep who may apply it), and a managed tag not in the
    catalog is refused, each with the offending field named.
    """
    with collect() as v:
        for i, tag in enumerate(add):
            if tag.strip() in catalog:
                v.add(f"add[{i}]", f"{tag.strip()!r} is a managed tag: apply it through add_managed")
        for i, tag in enumerate(add_managed):
            if tag.strip() not in catalog:
                v.add(f"add_managed[{i}]", f"{tag.strip()!r} is not in the managed tag catalog")
    touched = [t.strip() for t in add_managed] + [t.strip() for t in remove if t.strip() in managed_on_customer]
    for tag in touched:
        entry = catalog.get(tag)
        if entry is not None and not entry.applicable_by(identity):
            raise PermissionDenied(f"the managed tag {tag!r} is applied only by {', '.join(entry.applicable_roles)}")
    tags, added, removed = retag(customer, [*add, *add_managed], remove)
    managed = sorted({t.strip() for t in add_managed} & set(added) | (managed_on_customer & set(removed)))
    return TagPlan(tags, added, removed, managed)
