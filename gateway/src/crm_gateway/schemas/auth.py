"""Bodies of the authentication routes."""

from __future__ import annotations

from typing import Annotated

import msgspec


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Staff number and password (and a one-time code when the user enrolled one)."""

    username: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    otp: Annotated[str, msgspec.Meta(pattern=r"^\d{6}$")] | None = None


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A refresh token to rotate."""

    refresh_token: Annotated[str, msgspec.Meta(min_length=20, max_length=200)]


class PasswordChangeRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Current and new password."""

    current_password: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    new_password: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class TokenResponse(msgspec.Struct):
    """Bearer tokens."""

    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int


class MeResponse(msgspec.Struct):
    """Who the caller is and what they may do."""

    id: str
    username: str
    roles: list[str]
    permissions: list[str]
    scope: str  # the widest default scope of the roles (informative)
    scopes: dict[str, str]  # each permission's own scope: what a call under it may see
    branch_id: str
    team_id: str
    region: str
    must_change_password: bool


class TotpEnrolment(msgspec.Struct):
    """A new TOTP secret, shown once."""

    secret: str
    otpauth_uri: str


class TotpConfirm(msgspec.Struct, forbid_unknown_fields=True):
    """The first code from the authenticator app."""

    otp: Annotated[str, msgspec.Meta(pattern=r"^\d{6}$")]
