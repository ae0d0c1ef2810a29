"""Bodies of the customer routes, checked with the same identifier rules the customer service applies
(``crm_platform.identifiers``): a bad request is refused at the door with every bad field named."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Annotated, Any, Literal

import msgspec
from google.protobuf.descriptor import EnumDescriptor
from msgspec import UNSET, UnsetType

from crm.customer.v1 import customer_pb2
from crm_gateway.schemas.common import Money, rfc3339
from crm_platform import identifiers as ids
from crm_platform.validation import Violations

KIND_FROM_PROTO = {
    customer_pb2.CUSTOMER_KIND_INDIVIDUAL: "individual",
    customer_pb2.CUSTOMER_KIND_CORPORATE: "corporate",
}
KIND_TO_PROTO = {v: k for k, v in KIND_FROM_PROTO.items()}

Kind = Literal["individual", "corporate"]
Gender = Literal["male", "female"]
IdType = Literal["resident_id", "passport", "hk_macau_permit", "taiwan_permit", "foreign_permanent_resident", "other"]
RiskAppetite = Literal["conservative", "balanced", "aggressive"]
Tier = Literal["diamond", "platinum", "gold", "none"]
SourceChannel = Literal[
    "branch_counter", "lobby", "referral", "online", "mobile_app", "phone", "campaign", "import", "other"
]
Date = Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}$", description="YYYY-MM-DD")]


def _text(limit: int) -> Any:
    return Annotated[str, msgspec.Meta(max_length=limit)]


ENUMS: dict[str, EnumDescriptor] = {
    "gender": customer_pb2.Gender.DESCRIPTOR,
    "id_type": customer_pb2.IdType.DESCRIPTOR,
    "risk_appetite": customer_pb2.RiskAppetite.DESCRIPTOR,
    "tier": customer_pb2.Tier.DESCRIPTOR,
    "source_channel": customer_pb2.SourceChannel.DESCRIPTOR,
}


def _prefix(descriptor: EnumDescriptor) -> str:
    return descriptor.values_by_number[0].name.removesuffix("UNSPECIFIED")


@functools.cache
def _texts(descriptor: EnumDescriptor) -> dict[int, str]:
    prefix = _prefix(descriptor)
    return {v.number: v.name.removeprefix(prefix).lower() for v in descriptor.values if v.number != 0}


def enum_text(descriptor: EnumDescriptor, number: int) -> str | None:
    """``TIER_GOLD`` → ``gold``; unspecified (or unknown) → ``None``."""
    return _texts(descriptor).get(number)


def enum_number(descriptor: EnumDescriptor, text: str | None) -> int:
    """``gold`` → ``TIER_GOLD``'s number; ``None`` → 0."""
    return descriptor.values_by_name[_prefix(descriptor) + text.upper()].number if text else 0


# The profile fields as the API names them; identical in create, patch and answers.
PROFILE_TEXT = (
    "birth_date",
    "id_number",
    "mobile",
    "email",
    "address",
    "occupation",
    "employer",
    "family_situation",
    "risk_assessed_on",
    "risk_expires_on",
    "investment_experience",
    "credit_code",
    "industry",
    "main_business",
    "contact_person",
    "contact_mobile",
    "parent_customer_id",
)


def check_identifiers(values: dict[str, Any], v: Violations) -> None:
    """The identifier rules of ``crm_platform.identifiers`` over the fields present in ``values``."""
    birth = None
    for name in ("birth_date", "risk_assessed_on", "risk_expires_on"):
        if values.get(name):
            parsed = ids.parse_date(values[name])
            if parsed is None:
                v.add(name, "must be a date YYYY-MM-DD")
            elif name == "birth_date":
                if problem := ids.check_birth_date(parsed):
                    v.add(name, problem)
                birth = parsed
    if values.get("id_number"):
        if not values.get("id_type"):
            v.add("id_type", "is required with id_number")
        elif problem := ids.check_id_number(values["id_type"], ids.normalise_id_number(values["id_number"]), birth):
            v.add("id_number", problem)
    for name in ("mobile", "contact_mobile"):
        if values.get(name) and (problem := ids.check_mobile(ids.normalise_mobile(values[name]))):
            v.add(name, problem)
    if values.get("email") and (problem := ids.check_email(ids.normalise_email(values["email"]))):
        v.add("email", problem)
    if values.get("credit_code") and (
        problem := ids.check_credit_code(ids.normalise_credit_code(values["credit_code"]))
    ):
        v.add("credit_code", problem)
    if values.get("risk_appetite") and not values.get("risk_assessed_on"):
        v.add("risk_assessed_on", "is required with risk_appetite (the date of the risk assessment)")


def to_profile(values: dict[str, Any]) -> customer_pb2.CustomerProfile:
    """The service's profile message from the present fields of a create or patch body."""
    profile = customer_pb2.CustomerProfile(
        **{name: values.get(name) or "" for name in PROFILE_TEXT},
        **{name: enum_number(d, values.get(name)) for name, d in ENUMS.items()},
        interests=values.get("interests") or [],
        do_not_disturb=bool(values.get("do_not_disturb")),
    )
    income = values.get("annual_income")
    if income:
        profile.annual_income.CopyFrom(income.to_proto())
    return profile


class CustomerCreate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A new customer. Individual: name plus any personal facts; corporate: name and ``credit_code``."""

    kind: Kind
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    gender: Gender | None = None
    birth_date: Date | None = None
    id_type: IdType | None = None
    id_number: _text(32) | None = None
    mobile: _text(20) | None = None
    email: _text(254) | None = None
    address: _text(200) | None = None
    occupation: _text(100) | None = None
    employer: _text(100) | None = None
    annual_income: Money | None = None
    family_situation: _text(500) | None = None
    risk_appetite: RiskAppetite | None = None
    risk_assessed_on: Date | None = None
    risk_expires_on: Date | None = None
    investment_experience: _text(200) | None = None
    interests: Annotated[list[_text(50)], msgspec.Meta(max_length=20)] | None = None
    credit_code: _text(18) | None = None
    industry: _text(100) | None = None
    main_business: _text(500) | None = None
    contact_person: _text(50) | None = None
    contact_mobile: _text(20) | None = None
    parent_customer_id: _text(36) | None = None
    tier: Tier | None = None
    source_channel: SourceChannel | None = None
    do_not_disturb: bool | None = None

    def values(self) -> dict[str, Any]:
        """The fields given (not null)."""
        return {f: getattr(self, f) for f in self.__struct_fields__ if getattr(self, f) is not None}

    def violations(self) -> Violations:
        """Every rule the body breaks, field by field."""
        v = Violations()
        values = self.values()
        check_identifiers(values, v)
        if self.kind == "corporate" and not self.credit_code:
            v.add("credit_code", "is required for corporate customers")
        return v


class CustomerPatch(msgspec.Struct, forbid_unknown_fields=True):
    """A partial update (JSON merge patch): fields present are changed, ``null`` clears; ``note`` goes to history."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | UnsetType = UNSET
    gender: Gender | UnsetType | None = UNSET
    birth_date: Date | UnsetType | None = UNSET
    id_type: IdType | UnsetType | None = UNSET
    id_number: _text(32) | UnsetType | None = UNSET
    mobile: _text(20) | UnsetType | None = UNSET
    email: _text(254) | UnsetType | None = UNSET
    address: _text(200) | UnsetType | None = UNSET
    occupation: _text(100) | UnsetType | None = UNSET
    employer: _text(100) | UnsetType | None = UNSET
    annual_income: Money | UnsetType | None = UNSET
    family_situation: _text(500) | UnsetType | None = UNSET
    risk_appetite: RiskAppetite | UnsetType | None = UNSET
    risk_assessed_on: Date | UnsetType | None = UNSET
    risk_expires_on: Date | UnsetType | None = UNSET
    investment_experience: _text(200) | UnsetType | None = UNSET
    interests: Annotated[list[_text(50)], msgspec.Meta(max_length=20)] | UnsetType | None = UNSET
    credit_code: _text(18) | UnsetType | None = UNSET
    industry: _text(100) | UnsetType | None = UNSET
    main_business: _text(500) | UnsetType | None = UNSET
    contact_person: _text(50) | UnsetType | None = UNSET
    contact_mobile: _text(20) | UnsetType | None = UNSET
    parent_customer_id: _text(36) | UnsetType | None = UNSET
    tier: Tier | UnsetType | None = UNSET
    source_channel: SourceChannel | UnsetType | None = UNSET
    do_not_disturb: bool | UnsetType | None = UNSET
    note: _text(500) | UnsetType = UNSET

    def changes(self) -> dict[str, Any]:
        """The fields present in the body (``None`` = clear), without the note."""
        return {f: getattr(self, f) for f in self.__struct_fields__ if f != "note" and getattr(self, f) is not UNSET}

    def violations(self) -> Violations:
        """Rules that can be checked on the patch alone (the service checks the merged file)."""
        v = Violations()
        changes = self.changes()
        if not changes:
            v.add("body", "names no field to change")
        present = {k: val for k, val in changes.items() if val is not None}
        if "id_number" in present and "id_type" not in present:
            present.pop("id_number")  # its type is the stored one: the service checks it
            if changes.get("id_number") and (problem := _any_id_shape(changes["id_number"])):
                v.add("id_number", problem)
        if "risk_appetite" in present and "risk_assessed_on" not in present:
            present.pop("risk_appetite")  # the stored assessment date may apply
        check_identifiers(present, v)
        return v


def _any_id_shape(value: str) -> str | None:
    normalised = ids.normalise_id_number(value)
    return None if normalised.isalnum() and 4 <= len(normalised) <= 32 else "must be 4 to 32 letters or digits"


class CustomerOut(msgspec.Struct):
    """A customer as the caller may see it: sensitive fields (ID number, mobile, e-mail, address) masked."""

    id: str
    customer_no: str
    kind: str
    name: str
    owner_id: str | None
    branch_id: str
    team_id: str | None
    version: int
    created_at: str
    updated_at: str
    erased: bool = False
    gender: str | None = None
    birth_date: str | None = None
    id_type: str | None = None
    id_number: str | None = None
    mobile: str | None = None
    email: str | None = None
    address: str | None = None
    occupation: str | None = None
    employer: str | None = None
    annual_income: Money | None = None
    family_situation: str | None = None
    risk_appetite: str | None = None
    risk_assessed_on: str | None = None
    risk_expires_on: str | None = None
    investment_experience: str | None = None
    interests: list[str] = msgspec.field(default_factory=list)
    credit_code: str | None = None
    industry: str | None = None
    main_business: str | None = None
    contact_person: str | None = None
    contact_mobile: str | None = None
    parent_customer_id: str | None = None
    tier: str = "none"
    source_channel: str | None = None
    do_not_disturb: bool = False
    tags: list[str] = msgspec.field(default_factory=list)
    aum: Money | None = None
    product_count: int = 0
    familiar: bool = False
    value_first: bool = False
    last_contact_at: str | None = None
    status: Literal["active", "merged", "erased"] = "active"
    merged_into: str | None = None
    merged_at: str | None = None

    @classmethod
    def from_proto(cls, c: customer_pb2.Customer) -> CustomerOut:
        """Map the service's message to the HTTP shape."""
        p = c.profile
        income = p.annual_income if p.HasField("annual_income") else None
        return cls(
            id=c.id,
            customer_no=c.customer_no,
            kind=KIND_FROM_PROTO.get(c.kind, "unspecified"),
            name=c.name,
            owner_id=c.owner_id or None,
            branch_id=c.branch_id,
            team_id=c.team_id or None,
            version=c.version,
            created_at=rfc3339(c.created_at),
            updated_at=rfc3339(c.updated_at),
            erased=c.erased,
            annual_income=Money.from_proto(income) if income else None,
            interests=list(p.interests),
            tier=enum_text(ENUMS["tier"], p.tier) or "none",
            do_not_disturb=p.do_not_disturb,
            tags=list(c.tags),
            aum=Money.from_proto(c.aum) if c.HasField("aum") else None,
            product_count=c.product_count,
            familiar=c.familiar,
            value_first=c.value_first,
            last_contact_at=rfc3339(c.last_contact_at) if c.HasField("last_contact_at") else None,
            status="merged" if c.merged_into else "erased" if c.erased else "active",
            merged_into=c.merged_into or None,
            merged_at=rfc3339(c.merged_at) if c.HasField("merged_at") else None,
            **{name: getattr(p, name) or None for name in PROFILE_TEXT},
            **{name: enum_text(d, getattr(p, name)) for name, d in ENUMS.items() if name != "tier"},
        )


class FieldChangeOut(msgspec.Struct):
    """One field's before and after (sensitive values masked)."""

    field: str
    before: str
    after: str


class CustomerChangeOut(msgspec.Struct):
    """One entry of a customer's history."""

    id: str
    action: str
    actor: str
    occurred_at: str
    note: str | None
    changes: list[FieldChangeOut]

    @classmethod
    def from_proto(cls, h: customer_pb2.CustomerChange) -> CustomerChangeOut:
        """Map the service's message to the HTTP shape."""
        return cls(
            id=h.id,
            action=h.action,
            actor=h.actor,
            occurred_at=rfc3339(h.occurred_at),
            note=h.note or None,
            changes=[FieldChangeOut(c.field, c.before, c.after) for c in h.changes],
        )


class AssignIn(msgspec.Struct, forbid_unknown_fields=True):
    """Make ``owner_id`` the customer's owner."""

    owner_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    reason: _text(500) = ""


class ReclaimIn(msgspec.Struct, forbid_unknown_fields=True):
    """Return the customer to the branch pool."""

    reason: _text(500) = ""


class MergeIn(msgspec.Struct, forbid_unknown_fields=True):
    """Merge the customer ``duplicate_id`` into this one (the survivor). ``duplicate_version``, when given, is the
    duplicate's version (its ETag) the caller reviewed; the survivor's goes in ``If-Match``."""

    duplicate_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
    reason: _text(500) = ""  # required: checked in violations() so a missing one is named like a blank one
    duplicate_version: Annotated[int, msgspec.Meta(ge=1)] | None = None

    def violations(self) -> Violations:
        """Rules past the field types: a reason that is not only blanks."""
        v = Violations()
        if not self.reason.strip():
            v.add("reason", "is required (why the two files are the same customer)")
        return v


class MergeOut(CustomerOut):
    """The survivor after a merge, and the names of its fields filled from the duplicate."""

    filled_fields: list[str] = msgspec.field(default_factory=list)


Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=20, pattern=r"^[^,]+$")]


class TagsIn(msgspec.Struct, forbid_unknown_fields=True):
    """Tags to put on and take off a customer: free tags in ``add``, catalog tags in ``add_managed``."""

    add: Annotated[list[Tag], msgspec.Meta(max_length=30)] = msgspec.field(default_factory=list)
    remove: Annotated[list[Tag], msgspec.Meta(max_length=30)] = msgspec.field(default_factory=list)
    add_managed: Annotated[list[Tag], msgspec.Meta(max_length=30)] = msgspec.field(default_factory=list)


TaggingRole = Literal["rm", "teller", "team_lead", "branch_head"]


class ManagedTagIn(msgspec.Struct, forbid_unknown_fields=True):
    """A managed tag to add to the catalog (bank-wide by an administrator, the branch's own by its head)."""

    name: Tag
    description: _text(200) = ""
    applicable_roles: Annotated[list[TaggingRole], msgspec.Meta(max_length=4)] = msgspec.field(default_factory=list)


class ManagedTagOut(msgspec.Struct):
    """A managed tag of the catalog; ``branch_id`` is null for the bank-wide catalog."""

    name: str
    description: str
    applicable_roles: list[str]
    branch_id: str | None
    created_by: str
    created_at: str

    @classmethod
    def from_proto(cls, t: customer_pb2.ManagedTag) -> ManagedTagOut:
        """Map the service's message to the HTTP shape."""
        return cls(
            name=t.name,
            description=t.description,
            applicable_roles=list(t.applicable_roles),
            branch_id=t.branch_id or None,
            created_by=t.created_by,
            created_at=rfc3339(t.created_at),
        )


class ManagedTags(msgspec.Struct):
    """The managed tags the caller's branch may apply."""

    items: list[ManagedTagOut]


CustomerId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]


class AssignBulkIn(msgspec.Struct, forbid_unknown_fields=True):
    """Make ``owner_id`` the owner of every customer in ``customer_ids`` (1..500)."""

    customer_ids: Annotated[list[CustomerId], msgspec.Meta(min_length=1, max_length=500)]
    owner_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    reason: _text(500) = ""

    def violations(self) -> Violations:
        """Rules beyond the shape: no customer named twice."""
        v = Violations()
        if len(set(self.customer_ids)) != len(self.customer_ids):
            v.add("customer_ids", "names a customer twice")
        return v


class ItemError(msgspec.Struct):
    """One bad field of one item of a batch."""

    field: str
    message: str


class ItemOutcome(msgspec.Struct, omit_defaults=True):
    """The outcome for one customer of a batch call."""

    customer_id: str
    outcome: str
    message: str | None = None
    errors: list[ItemError] = msgspec.field(default_factory=list)
    version: int | None = None
    aum: Money | None = None
    signals: list[str] = msgspec.field(default_factory=list)


class BatchOutcomes(msgspec.Struct):
    """One outcome per customer in the order asked, and how many ended in each outcome."""

    results: list[ItemOutcome]
    counts: dict[str, int]

    @classmethod
    def of(cls, results: list[ItemOutcome]) -> BatchOutcomes:
        """Count the outcomes."""
        counts: dict[str, int] = {}
        for r in results:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        return cls(results=results, counts=counts)


class SegmentFilter(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A segment's conditions over customer fields (all must hold); never personal identifiers."""

    tiers: list[Tier] = msgspec.field(default_factory=list)
    tags: Annotated[list[Tag], msgspec.Meta(max_length=30)] = msgspec.field(default_factory=list)
    risk_appetites: list[RiskAppetite] = msgspec.field(default_factory=list)
    owner_id: _text(64) | None = None
    branch_id: _text(64) | None = None
    team_id: _text(64) | None = None
    kind: Kind | None = None
    age_min: Annotated[int, msgspec.Meta(ge=0, le=150)] | None = None
    age_max: Annotated[int, msgspec.Meta(ge=0, le=150)] | None = None
    exclude_do_not_disturb: bool = False
    last_contact_before: (
        Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}T", description="RFC 3339 with a time zone")] | None
    ) = None
    no_contact_days: Annotated[int, msgspec.Meta(ge=0, le=3660)] | None = None

    def violations(self) -> Violations:
        """Rules beyond the shape: the date must parse and carry a time zone."""
        v = Violations()
        if self.last_contact_before is not None:
            try:
                parsed = dt.datetime.fromisoformat(self.last_contact_before)
            except ValueError:
                v.add("filter.last_contact_before", "must be an RFC 3339 date and time")
            else:  # a time zone, and inside years 1 to 9999 once in UTC
                v.timestamp("filter.last_contact_before", parsed)
        return v

    def to_proto(self) -> customer_pb2.SegmentFilter:
        """The service's message."""
        before = None
        if self.last_contact_before is not None:
            before = Violations().timestamp(
                "filter.last_contact_before", dt.datetime.fromisoformat(self.last_contact_before)
            )
        return customer_pb2.SegmentFilter(
            tiers=[enum_number(ENUMS["tier"], t) for t in self.tiers],
            tags=self.tags,
            risk_appetites=[enum_number(ENUMS["risk_appetite"], r) for r in self.risk_appetites],
            owner_id=self.owner_id or "",
            branch_id=self.branch_id or "",
            team_id=self.team_id or "",
            kind=KIND_TO_PROTO[self.kind] if self.kind else 0,
            age_min=self.age_min or 0,
            age_max=self.age_max or 0,
            do_not_disturb_excluded=self.exclude_do_not_disturb,
            last_contact_before=before,
            no_contact_days=self.no_contact_days or 0,
        )

    @classmethod
    def from_proto(cls, f: customer_pb2.SegmentFilter) -> SegmentFilter:
        """Map the service's message to the HTTP shape."""
        return cls(
            tiers=[enum_text(ENUMS["tier"], t) for t in f.tiers],  # type: ignore[misc]
            tags=list(f.tags),
            risk_appetites=[enum_text(ENUMS["risk_appetite"], r) for r in f.risk_appetites],  # type: ignore[misc]
            owner_id=f.owner_id or None,
            branch_id=f.branch_id or None,
            team_id=f.team_id or None,
            kind=KIND_FROM_PROTO.get(f.kind),  # type: ignore[arg-type]
            age_min=f.age_min or None,
            age_max=f.age_max or None,
            exclude_do_not_disturb=f.do_not_disturb_excluded,
            last_contact_before=rfc3339(f.last_contact_before) if f.HasField("last_contact_before") else None,
            no_contact_days=f.no_contact_days or None,
        )


class SegmentIn(msgspec.Struct, forbid_unknown_fields=True):
    """A dynamic segment to save (shared in the caller's branch)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    filter: SegmentFilter = msgspec.field(default_factory=SegmentFilter)


class SegmentOut(msgspec.Struct):
    """A saved dynamic segment."""

    id: str
    name: str
    filter: SegmentFilter
    created_by: str
    branch_id: str
    created_at: str

    @classmethod
    def from_proto(cls, s: customer_pb2.Segment) -> SegmentOut:
        """Map the service's message to the HTTP shape."""
        return cls(
            id=s.id,
            name=s.name,
            filter=SegmentFilter.from_proto(s.filter),
            created_by=s.created_by,
            branch_id=s.branch_id,
            created_at=rfc3339(s.created_at),
        )


class SegmentMembers(msgspec.Struct):
    """A page of a segment's members the caller may see, and how many there are in all."""

    items: list[CustomerOut]
    next_cursor: str | None
    total: int


ProductType = Literal["deposit", "time_deposit", "wealth", "fund", "insurance", "loan", "external", "other"]
PRODUCT_TYPE = customer_pb2.ProductType.DESCRIPTOR


class HoldingIO(msgspec.Struct, forbid_unknown_fields=True):
    """One product a customer holds, as core banking reports it."""

    product_code: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    product_type: ProductType
    amount: Money
    product_name: _text(100) = ""
    start_date: Date | None = None
    maturity_date: Date | None = None

    def to_proto(self) -> customer_pb2.Holding:
        """The service's message."""
        return customer_pb2.Holding(
            product_code=self.product_code,
            product_name=self.product_name,
            product_type=enum_number(PRODUCT_TYPE, self.product_type),
            amount=self.amount.to_proto(),
            start_date=self.start_date or "",
            maturity_date=self.maturity_date or "",
        )

    @classmethod
    def from_proto(cls, h: customer_pb2.Holding) -> HoldingIO:
        """Map the service's message to the HTTP shape."""
        return cls(
            product_code=h.product_code,
            product_type=enum_text(PRODUCT_TYPE, h.product_type),  # type: ignore[arg-type]
            amount=Money.from_proto(h.amount),
            product_name=h.product_name,
            start_date=h.start_date or None,
            maturity_date=h.maturity_date or None,
        )


class HoldingsIn(msgspec.Struct, forbid_unknown_fields=True):
    """A customer's full current holdings (the snapshot replaces the previous one)."""

    holdings: Annotated[list[HoldingIO], msgspec.Meta(max_length=500)]


class SnapshotIn(msgspec.Struct, forbid_unknown_fields=True):
    """One customer's full current holdings in a batch feed."""

    customer_id: CustomerId
    holdings: Annotated[list[HoldingIO], msgspec.Meta(max_length=500)]


class HoldingsBatchIn(msgspec.Struct, forbid_unknown_fields=True):
    """Snapshots of many customers from a core-banking feed (1..1000, each customer once)."""

    snapshots: Annotated[list[SnapshotIn], msgspec.Meta(min_length=1, max_length=1000)]

    def violations(self) -> Violations:
        """Rules beyond the shape: each customer once (two snapshots of one customer: which one wins?)."""
        v = Violations()
        seen: set[str] = set()
        for i, snapshot in enumerate(self.snapshots):
            if snapshot.customer_id in seen:
                v.add(f"snapshots[{i}].customer_id", "appears twice in the batch")
            seen.add(snapshot.customer_id)
        return v


class HoldingsOut(msgspec.Struct):
    """A customer's holdings, and (after a feed) the signals the change raised."""

    holdings: list[HoldingIO]
    aum: Money | None = None
    signals: list[str] = msgspec.field(default_factory=list)
