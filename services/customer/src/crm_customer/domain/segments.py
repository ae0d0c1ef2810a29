"""Saved dynamic segments: conditions over customer fields, members computed in the asker's scope."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from crm_customer.domain.customer import RISK_APPETITES, TIERS, CustomerKind, add_years, require
from crm_customer.domain.tags import TAG_LENGTH
from crm_platform.auth_context import Identity
from crm_platform.ids import new_id
from crm_platform.validation import collect


@dataclass(frozen=True)
class SegmentCriteria:
    """The conditions of a segment (every given one must hold); never personal identifiers."""

    tiers: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    risk_appetites: tuple[str, ...] = ()
    owner_id: str = ""
    branch_id: str = ""
    team_id: str = ""
    kind: str = ""
    age_min: int = 0
    age_max: int = 0
    exclude_do_not_disturb: bool = False
    last_contact_before: dt.datetime | None = None
    no_contact_days: int = 0

    def contact_cutoff(self, now: dt.datetime) -> dt.datetime | None:
        """The "last contact before" bound as of ``now``: the tighter of the fixed date and the relative days."""
        bounds = [self.last_contact_before] if self.last_contact_before else []
        if self.no_contact_days:
            bounds.append(now - dt.timedelta(days=self.no_contact_days))
        return min(bounds) if bounds else None


@dataclass(frozen=True)
class Segment:
    """A saved dynamic segment, shared in its branch; members are computed when asked, in the asker's scope."""

    id: str
    name: str
    criteria: SegmentCriteria
    created_by: str
    branch_id: str
    created_at: dt.datetime


def define_segment(identity: Identity, name: str, criteria: SegmentCriteria, now: dt.datetime) -> Segment:
    """Validate a new segment."""
    require(identity, "customer:read")
    with collect() as v:
        clean = v.require_text("name", name, max_length=100)
        if any(t not in TIERS for t in criteria.tiers):
            v.add("filter.tiers", f"must be among {', '.join(TIERS)}")
        if any(r not in RISK_APPETITES for r in criteria.risk_appetites):
            v.add("filter.risk_appetites", f"must be among {', '.join(RISK_APPETITES)}")
        if any(not t or len(t) > TAG_LENGTH for t in criteria.tags):
            v.add("filter.tags", f"tags are 1 to {TAG_LENGTH} characters")
        if criteria.kind and criteria.kind not in {k.value for k in CustomerKind}:
            v.add("filter.kind", "must be individual or corporate")
        if not 0 <= criteria.age_min <= 150 or not 0 <= criteria.age_max <= 150:
            v.add("filter.age_min", "ages are 0 to 150 years")
        elif criteria.age_max and criteria.age_min > criteria.age_max:
            v.add("filter.age_max", "must not be below age_min")
        if not 0 <= criteria.no_contact_days <= 3660:
            v.add("filter.no_contact_days", "must be 0 to 3660 days")
        if not identity.branch_id:
            v.add("branch_id", "caller belongs to no branch")
    return Segment(new_id(), clean, criteria, identity.user_id, identity.branch_id, now)


def birth_date_bounds(age_min: int, age_max: int, today: dt.date) -> tuple[dt.date | None, dt.date | None]:
    """Birth dates of people aged ``age_min``..``age_max`` today: (born after, born on or before)."""
    latest = add_years(today, -age_min) if age_min else None
    earliest = add_years(today, -(age_max + 1)) if age_max else None
    return earliest, latest
