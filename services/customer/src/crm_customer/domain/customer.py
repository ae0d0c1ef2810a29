"""The customer file: kinds, fields and their rules, creation, revision and change tracking."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from crm_platform import identifiers as ids
from crm_platform import pii
from crm_platform.auth_context import Identity
from crm_platform.errors import PermissionDenied
from crm_platform.ids import new_id
from crm_platform.validation import Violations, collect

# Roles whose new customers they own themselves; others create into the branch pool.
_SELF_OWNING_ROLES = frozenset({"rm", "teller", "team_lead", "branch_head"})
_CREATE_PERMISSIONS = ("customer:create", "customer:write")


class CustomerKind(enum.StrEnum):
    """Individual or corporate."""

    INDIVIDUAL = "individual"
    CORPORATE = "corporate"


GENDERS = ("male", "female")
RISK_APPETITES = ("conservative", "balanced", "aggressive")
TIERS = ("diamond", "platinum", "gold", "none")
SOURCE_CHANNELS = (
    "branch_counter",
    "lobby",
    "referral",
    "online",
    "mobile_app",
    "phone",
    "campaign",
    "import",
    "other",
)
CURRENCIES = ("CNY", "USD", "EUR", "HKD", "GBP", "JPY")

# A risk assessment (风险测评) is valid for one year unless the assessment says otherwise.
RISK_ASSESSMENT_VALIDITY_YEARS = 1

# Fields encrypted at rest and masked in every answer, with their mask.
SENSITIVE_FIELDS = {
    "id_number": pii.mask_id_number,
    "mobile": pii.mask_mobile,
    "email": pii.mask_email,
    "address": pii.mask_address,
    "contact_mobile": pii.mask_mobile,
}
_TEXT_LIMITS = {
    "name": 100,
    "address": 200,
    "occupation": 100,
    "employer": 100,
    "family_situation": 500,
    "investment_experience": 200,
    "industry": 100,
    "main_business": 500,
    "contact_person": 50,
}
# Free text, where a line break belongs; every other text of the file is one line (a name, an address, a code).
_FREE_TEXT = frozenset({"family_situation", "investment_experience", "main_business"})
_INDIVIDUAL_ONLY = ("gender", "birth_date", "occupation", "employer", "family_situation")
_CORPORATE_ONLY = ("credit_code", "industry", "main_business", "contact_person", "contact_mobile")
_MAX_INTERESTS = 20


@dataclass(frozen=True)
class Profile:
    """The editable facts of a customer file, normalised and valid (plaintext; the store encrypts)."""

    name: str
    gender: str = ""
    birth_date: dt.date | None = None
    id_type: str = ""
    id_number: str = ""
    mobile: str = ""
    email: str = ""
    address: str = ""
    occupation: str = ""
    employer: str = ""
    annual_income: str = ""
    annual_income_currency: str = ""
    family_situation: str = ""
    risk_appetite: str = ""
    risk_assessed_on: dt.date | None = None
    risk_expires_on: dt.date | None = None
    investment_experience: str = ""
    interests: tuple[str, ...] = ()
    credit_code: str = ""
    industry: str = ""
    main_business: str = ""
    contact_person: str = ""
    contact_mobile: str = ""
    parent_customer_id: str = ""
    tier: str = "none"
    source_channel: str = ""
    do_not_disturb: bool = False


PROFILE_FIELDS = tuple(f.name for f in dataclasses.fields(Profile))


@dataclass(frozen=True)
class Customer:
    """A customer file: its identity, profile and ownership."""

    id: str
    customer_no: str
    kind: CustomerKind
    profile: Profile
    owner_id: str
    team_id: str
    branch_id: str
    region: str
    version: int
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
    erased_at: dt.datetime | None = None
    tags: tuple[str, ...] = ()
    aum: decimal.Decimal = decimal.Decimal(0)
    product_count: int = 0
    last_contact_at: dt.datetime | None = None
    merged_into: str = ""  # the survivor a merged duplicate went into
    merged_at: dt.datetime | None = None

    @property
    def name(self) -> str:
        """The customer's or company's name."""
        return self.profile.name


@dataclass(frozen=True)
class FieldChange:
    """One field's before and after, sensitive values already masked."""

    field: str
    before: str
    after: str


def new_customer_no(now: dt.datetime) -> str:
    """A bank customer number: ``C`` + date + 8 random digits (unique index catches the rare clash)."""
    return f"C{now:%y%m%d}{secrets.randbelow(10**8):08d}"


def new_customer_numbers(now: dt.datetime, count: int) -> list[str]:
    """``count`` of :func:`new_customer_no`, their randomness drawn in one read (an import numbers thousands at a
    time). Each takes 64 random bits modulo 10⁸: a bias of under 10⁻¹¹."""
    prefix = f"C{now:%y%m%d}"
    raw = secrets.token_bytes(8 * count)
    return [f"{prefix}{int.from_bytes(raw[i : i + 8], 'big') % 10**8:08d}" for i in range(0, 8 * count, 8)]


def _text(v: Violations, raw: Mapping[str, object], name: str) -> str:
    given = raw.get(name)
    if not given:  # most of a file's fields are absent: no string work for them
        return ""
    value = str(given).strip()
    limit = _TEXT_LIMITS.get(name, 100)
    if len(value) > limit:
        v.add(name, f"must be at most {limit} characters")
    else:
        v.check_text(name, value, multiline=name in _FREE_TEXT)
    return value


def _choice(v: Violations, raw: Mapping[str, object], name: str, allowed: tuple[str, ...]) -> str:
    given = raw.get(name)
    if not given:
        return ""
    value = str(given).strip()
    if value and value not in allowed:
        v.add(name, f"must be one of {', '.join(allowed)}")
        return ""
    return value


def _date(v: Violations, raw: Mapping[str, object], name: str) -> dt.date | None:
    value = raw.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value
    parsed = ids.parse_date(str(value))
    if parsed is None:
        v.add(name, "must be a date YYYY-MM-DD")
    return parsed


def _money(v: Violations, raw: Mapping[str, object]) -> tuple[str, str]:
    amount = str(raw.get("annual_income") or "").strip()
    currency = str(raw.get("annual_income_currency") or "").strip().upper()
    if not amount:
        return "", ""
    try:
        value = decimal.Decimal(amount)
    except decimal.InvalidOperation:
        v.add("annual_income", "must be a decimal amount such as 500000.00")
        return "", ""
    if not value.is_finite() or value < 0 or value >= 10**15 or value.as_tuple().exponent < -2:  # type: ignore[operator]
        v.add("annual_income", "must be a non-negative amount with at most 2 decimals")
        return "", ""
    currency = currency or "CNY"
    if currency not in CURRENCIES:
        v.add("annual_income.currency", f"must be one of {', '.join(CURRENCIES)}")
    return f"{value:.2f}", currency


def validate_profile(kind: str, raw: Mapping[str, object], today: dt.date) -> Profile:
    """Check every field of a customer file at once; raise ``InvalidArgument`` naming each bad field.

    ``raw`` holds strings (dates ``YYYY-MM-DD``), ``interests`` as a sequence and ``do_not_disturb`` as a bool.
    A resident ID number without a birth date supplies it; with one, the two must agree.
    """
    with collect() as v:
        profile = check_profile(v, kind, raw, today)
    return profile


_KINDS = frozenset(k.value for k in CustomerKind)


def check_profile(v: Violations, kind: str, raw: Mapping[str, object], today: dt.date) -> Profile:
    """:func:`validate_profile` recording into ``v`` (the result is meaningful only when ``v`` stays empty)."""
    name = v.require_text("name", str(raw.get("name") or ""), max_length=100)
    if kind not in _KINDS:
        v.add("kind", "must be individual or corporate")
    texts = {f: _text(v, raw, f) for f in _TEXT_LIMITS if f != "name"}
    gender = _choice(v, raw, "gender", GENDERS)
    tier = _choice(v, raw, "tier", TIERS) or "none"
    source_channel = _choice(v, raw, "source_channel", SOURCE_CHANNELS)
    risk_appetite = _choice(v, raw, "risk_appetite", RISK_APPETITES)
    id_type = _choice(v, raw, "id_type", ids.ID_TYPES)

    birth_date = _date(v, raw, "birth_date")
    if birth_date is not None and (problem := ids.check_birth_date(birth_date, today)):
        v.add("birth_date", problem)

    id_number = ids.normalise_id_number(str(raw.get("id_number") or ""))
    if id_number and not id_type and "id_type" not in {x.field for x in v.items}:
        v.add("id_type", "is required with id_number")
    elif id_type and not id_number:
        v.add("id_number", "is required with id_type")
    elif id_number and id_type:
        if problem := ids.check_id_number(id_type, id_number, birth_date, today):
            v.add("id_number", problem)
        elif id_type == "resident_id" and birth_date is None:
            birth_date = ids.resident_id_birth_date(id_number)

    mobile = ids.normalise_mobile(str(raw.get("mobile") or ""))
    if mobile and (problem := ids.check_mobile(mobile)):
        v.add("mobile", problem)
    contact_mobile = ids.normalise_mobile(str(raw.get("contact_mobile") or ""))
    if contact_mobile and (problem := ids.check_mobile(contact_mobile)):
        v.add("contact_mobile", problem)
    email = ids.normalise_email(str(raw.get("email") or ""))
    if email and (problem := ids.check_email(email)):
        v.add("email", problem)
    credit_code = ids.normalise_credit_code(str(raw.get("credit_code") or ""))
    if credit_code and (problem := ids.check_credit_code(credit_code)):
        v.add("credit_code", problem)

    income, currency = _money(v, raw)

    assessed = _date(v, raw, "risk_assessed_on")
    expires = _date(v, raw, "risk_expires_on")
    if risk_appetite and assessed is None and "risk_assessed_on" not in {x.field for x in v.items}:
        v.add("risk_assessed_on", "is required with risk_appetite (the date of the risk assessment)")
    if not risk_appetite and (assessed or expires):
        v.add("risk_appetite", "is required with a risk assessment date")
    if assessed is not None and assessed > today:
        v.add("risk_assessed_on", "must not be in the future")
    if assessed is not None and expires is None:
        expires = add_years(assessed, RISK_ASSESSMENT_VALIDITY_YEARS)
    if assessed is not None and expires is not None and expires <= assessed:
        v.add("risk_expires_on", "must be after risk_assessed_on")

    interests_raw = raw.get("interests") or ()
    interests = tuple(dict.fromkeys(str(i).strip() for i in interests_raw if str(i).strip()))  # type: ignore[attr-defined]
    if len(interests) > _MAX_INTERESTS or any(len(i) > 50 for i in interests):
        v.add("interests", f"must be at most {_MAX_INTERESTS} entries of at most 50 characters")
    else:
        for index, interest in enumerate(interests):
            v.check_text(f"interests[{index}]", interest)

    parent = str(raw.get("parent_customer_id") or "").strip()
    if len(parent) > 36:
        v.add("parent_customer_id", "must be a customer id")

    values: dict[str, object] = {
        **texts,
        "gender": gender,
        "birth_date": birth_date,
        "credit_code": credit_code,
        "contact_mobile": contact_mobile,
    }
    if kind == CustomerKind.INDIVIDUAL:
        for f in _CORPORATE_ONLY:
            if values.get(f):
                v.add(f, "applies to corporate customers only")
    elif kind == CustomerKind.CORPORATE:
        for f in _INDIVIDUAL_ONLY:
            if values.get(f):
                v.add(f, "applies to individual customers only")
        if not credit_code and "credit_code" not in {x.field for x in v.items}:
            v.add("credit_code", "is required for corporate customers")
    return Profile(
        name=name,
        gender=gender,
        birth_date=birth_date,
        id_type=id_type,
        id_number=id_number,
        mobile=mobile,
        email=email,
        annual_income=income,
        annual_income_currency=currency,
        risk_appetite=risk_appetite,
        risk_assessed_on=assessed,
        risk_expires_on=expires,
        interests=interests,
        credit_code=credit_code,
        contact_mobile=contact_mobile,
        parent_customer_id=parent,
        tier=tier,
        source_channel=source_channel,
        do_not_disturb=bool(raw.get("do_not_disturb", False)),
        **texts,  # type: ignore[arg-type]
    )


def add_years(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def profile_as_raw(profile: Profile) -> dict[str, object]:
    """The profile in the form :func:`validate_profile` accepts (to merge a partial update onto it)."""
    raw: dict[str, object] = {}
    for name in PROFILE_FIELDS:
        value = getattr(profile, name)
        raw[name] = value.isoformat() if isinstance(value, dt.date) else value
    return raw


def display_value(field: str, value: object) -> str:
    """A field's value as history and events may show it: sensitive values masked."""
    if value is None:
        return ""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, tuple):
        return ", ".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    mask = SENSITIVE_FIELDS.get(field)
    return mask(text) if mask else text


def changes(before: Profile, after: Profile) -> list[FieldChange]:
    """The fields that differ, in declaration order, with masked before/after values."""
    out = []
    for name in PROFILE_FIELDS:
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            out.append(FieldChange(name, display_value(name, old), display_value(name, new)))
    return out


def masked(profile: Profile) -> Profile:
    """The profile with every sensitive field masked (what an answer carries)."""
    return dataclasses.replace(profile, **{f: m(getattr(profile, f)) for f, m in SENSITIVE_FIELDS.items()})


def register_customer(identity: Identity, kind: str | None, raw: Mapping[str, object], now: dt.datetime) -> Customer:
    """Validate a new customer and decide its owner: the creating RM or teller, else the branch pool."""
    if not any(identity.has(p) for p in _CREATE_PERMISSIONS):
        raise PermissionDenied("caller may not create customers")
    with collect() as v:
        profile = check_profile(v, kind or "", raw, now.date())
        if not identity.branch_id:
            v.add("branch_id", "caller belongs to no branch")
    self_owned = bool(_SELF_OWNING_ROLES.intersection(identity.roles))
    return Customer(
        id=new_id(),
        customer_no=new_customer_no(now),
        kind=CustomerKind(kind),
        profile=profile,
        owner_id=identity.user_id if self_owned else "",
        team_id=identity.team_id if self_owned else "",
        branch_id=identity.branch_id,
        region=identity.region,
        version=1,
        created_by=identity.user_id,
        created_at=now,
        updated_at=now,
    )


def revise_profile(
    customer: Customer, updates: Mapping[str, object], today: dt.date
) -> tuple[Profile, list[FieldChange]]:
    """Apply a partial update to a customer's profile: the merged file is validated whole; return it and the changes."""
    unknown = [f for f in updates if f not in PROFILE_FIELDS]
    if unknown:
        with collect() as v:
            for f in unknown:
                v.add(f, "is not an editable field")
    raw = {**profile_as_raw(customer.profile), **updates}
    # A new risk assessment date without a new expiry gets the default validity again.
    if "risk_assessed_on" in updates and "risk_expires_on" not in updates:
        raw["risk_expires_on"] = ""
    # A new ID number brings its own birth date unless the update sets one too.
    if "id_number" in updates and "birth_date" not in updates and customer.profile.id_type == "resident_id":
        raw["birth_date"] = ""
    profile = validate_profile(customer.kind.value, raw, today)
    return profile, changes(customer.profile, profile)


def require(identity: Identity, permission: str) -> None:
    """Raise :class:`PermissionDenied` unless the caller holds ``permission`` (defence in depth)."""
    if not identity.has(permission):
        raise PermissionDenied(f"requires permission {permission}")
