"""Bodies of the admin routes (organisation and users)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

Code = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Region = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Role = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
UserRef = Annotated[str, msgspec.Meta(max_length=64)]
Email = Annotated[str, msgspec.Meta(max_length=254)]
Mobile = Annotated[str, msgspec.Meta(max_length=20)]


def patched(value: str | UnsetType | None) -> str | None:
    """A clearable field of a patch (lead, head, e-mail, mobile) as :class:`crm_gateway.organisation.Organisation`
    takes it: absent → None (kept), ``null`` or "" → "" (cleared), else the value."""
    if value is UNSET:
        return None
    return value or ""


def _iso(value: Any) -> str:
    if isinstance(value, dt.datetime):
        value = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


class BranchCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new branch: its code, name and region."""

    id: Code
    name: Name
    region: Region


class BranchUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Fields of a branch to change; ``head_id`` ``null`` or "" clears the head."""

    name: Name | None = None
    region: Region | None = None
    head_id: UserRef | UnsetType | None = UNSET


class BranchOut(msgspec.Struct):
    """A branch."""

    id: str
    name: str
    region: str
    head_id: str | None
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, row: dict[str, Any]) -> BranchOut:
        """From a store row."""
        return cls(
            row["id"],
            row["name"],
            row["region"],
            row["head_id"] or None,
            _iso(row["created_at"]),
            _iso(row["updated_at"]),
        )


class TeamCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new team in a branch."""

    id: Code
    branch_id: Code
    name: Name


class TeamUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Fields of a team to change; ``lead_id`` ``null`` or "" clears the lead."""

    name: Name | None = None
    lead_id: UserRef | UnsetType | None = UNSET


class TeamOut(msgspec.Struct):
    """A team."""

    id: str
    branch_id: str
    name: str
    lead_id: str | None
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, row: dict[str, Any]) -> TeamOut:
        """From a store row."""
        return cls(
            row["id"],
            row["branch_id"],
            row["name"],
            row["lead_id"] or None,
            _iso(row["created_at"]),
            _iso(row["updated_at"]),
        )


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new staff member."""

    username: Annotated[str, msgspec.Meta(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]+$")]
    display_name: Name
    roles: Annotated[list[Role], msgspec.Meta(min_length=1, max_length=8)]
    branch_id: Code | None = None
    team_id: Code | None = None
    email: Email | None = None
    mobile: Mobile | None = None


class UserUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Fields of a user to change; ``email`` or ``mobile`` ``null`` or "" clears it."""

    display_name: Name | None = None
    branch_id: Code | None = None
    team_id: Code | None = None
    email: Email | UnsetType | None = UNSET
    mobile: Mobile | UnsetType | None = UNSET


class RolesUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """The complete new set of roles."""

    roles: Annotated[list[Role], msgspec.Meta(min_length=1, max_length=8)]


class UserOut(msgspec.Struct):
    """A user without secrets; ``email`` and ``mobile`` masked (``z***@example.com``, ``138****8000``)."""

    id: str
    username: str
    display_name: str
    branch_id: str | None
    team_id: str | None
    region: str
    roles: list[str]
    status: str
    must_change_password: bool
    totp_enabled: bool
    email: str | None
    mobile: str | None
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, row: dict[str, Any]) -> UserOut:
        """From a store row."""
        return cls(
            row["id"],
            row["username"],
            row["display_name"],
            row["branch_id"],
            row["team_id"],
            row["region"],
            row["roles"],
            row["status"],
            bool(row["must_change_password"]),
            bool(row["totp_enabled"]),
            row.get("email"),
            row.get("mobile"),
            _iso(row["created_at"]),
            _iso(row["updated_at"]),
        )


class UserCreated(msgspec.Struct):
    """A created user and the temporary password, shown this once."""

    user: UserOut
    temporary_password: str


class PasswordReset(msgspec.Struct):
    """A temporary password, shown this once."""

    temporary_password: str


class CalendarOut(msgspec.Struct):
    """A business calendar in force (``ETag`` = ``version``, what ``If-Match`` takes to change it).

    ``source`` is ``branch`` (the branch's own), ``bank_default`` (the stored bank-wide one) or ``built_in`` (the
    mainland default, version 0); ``inherited`` is true for a branch without a calendar of its own, whose
    ``version`` is then that of its own (0 when it never had one).
    """

    branch_id: str
    calendar: dict[str, Any]
    version: int
    source: str
    inherited: bool
    updated_by: str | None
    updated_at: str | None

    @classmethod
    def of(cls, view: dict[str, Any]) -> CalendarOut:
        """From :class:`crm_gateway.calendars.BusinessCalendars`' answer."""
        return cls(
            view["branch_id"],
            view["calendar"],
            view["version"],
            view["source"],
            view["inherited"],
            view["updated_by"],
            _iso(view["updated_at"]) if view["updated_at"] is not None else None,
        )
