"""Bodies of the admin routes (organisation and users)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec

Code = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Region = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
Role = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]


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
    """Fields of a branch to change."""

    name: Name | None = None
    region: Region | None = None


class BranchOut(msgspec.Struct):
    """A branch."""

    id: str
    name: str
    region: str
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, row: dict[str, Any]) -> BranchOut:
        """From a store row."""
        return cls(row["id"], row["name"], row["region"], _iso(row["created_at"]), _iso(row["updated_at"]))


class TeamCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new team in a branch."""

    id: Code
    branch_id: Code
    name: Name


class TeamOut(msgspec.Struct):
    """A team."""

    id: str
    branch_id: str
    name: str
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, row: dict[str, Any]) -> TeamOut:
        """From a store row."""
        return cls(row["id"], row["branch_id"], row["name"], _iso(row["created_at"]), _iso(row["updated_at"]))


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new staff member."""

    username: Annotated[str, msgspec.Meta(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]+$")]
    display_name: Name
    roles: Annotated[list[Role], msgspec.Meta(min_length=1, max_length=8)]
    branch_id: Code | None = None
    team_id: Code | None = None


class UserUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Fields of a user to change."""

    display_name: Name | None = None
    branch_id: Code | None = None
    team_id: Code | None = None


class RolesUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """The complete new set of roles."""

    roles: Annotated[list[Role], msgspec.Meta(min_length=1, max_length=8)]


class UserOut(msgspec.Struct):
    """A user without secrets."""

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
