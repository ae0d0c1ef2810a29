"""``/api/v1/auth/*`` and ``/api/v1/me``."""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post

from crm_gateway.auth import Authenticator, TokenPair
from crm_gateway.policy import AUTHENTICATED, PUBLIC
from crm_gateway.schemas.auth import (
    LoginRequest,
    MeResponse,
    PasswordChangeRequest,
    RefreshRequest,
    TokenResponse,
    TotpConfirm,
    TotpEnrolment,
)


def _tokens(pair: TokenPair) -> TokenResponse:
    return TokenResponse(pair.access_token, pair.refresh_token, "Bearer", pair.expires_in)


def _authenticator(request: Request[Any, Any, Any]) -> Authenticator:
    return request.app.state.authenticator  # type: ignore[no-any-return]


@post("/api/v1/auth/login", opt={"permission": PUBLIC}, status_code=200)
async def login(request: Request[Any, Any, Any], data: LoginRequest) -> TokenResponse:
    """Exchange staff number and password for an access and a refresh token."""
    request.scope["state"]["audit_detail"] = {"username": data.username}
    limits = request.app.state.limits
    limits.login_address.hit(limits.client_address(request.scope))
    limits.login_username.hit(data.username.lower())
    return _tokens(await _authenticator(request).login(data.username, data.password, data.otp))


@post("/api/v1/auth/refresh", opt={"permission": PUBLIC}, status_code=200)
async def refresh(request: Request[Any, Any, Any], data: RefreshRequest) -> TokenResponse:
    """Rotate a refresh token (a reused one revokes the whole session)."""
    return _tokens(await _authenticator(request).refresh(data.refresh_token))


@post("/api/v1/auth/logout", opt={"permission": AUTHENTICATED}, status_code=204)
async def logout(request: Request[Any, Any, Any]) -> None:
    """Revoke the caller's session (its refresh tokens, and its access tokens on every gateway replica)."""
    state = request.scope["state"]
    await _authenticator(request).logout(state["claims"]["sid"], state["identity"].user_id)


@post("/api/v1/auth/password", opt={"permission": AUTHENTICATED}, status_code=200)
async def change_password(request: Request[Any, Any, Any], data: PasswordChangeRequest) -> TokenResponse:
    """Change one's own password under the policy; answers fresh tokens."""
    identity = request.scope["state"]["identity"]
    return _tokens(
        await _authenticator(request).change_password(identity.user_id, data.current_password, data.new_password)
    )


@get("/api/v1/me", opt={"permission": AUTHENTICATED})
async def me(request: Request[Any, Any, Any]) -> MeResponse:
    """The caller's user, roles, permissions and data scope."""
    identity = request.scope["state"]["identity"]
    claims = request.scope["state"]["claims"]
    grant = request.app.state.policy.grant(identity.roles)
    return MeResponse(
        id=identity.user_id,
        username=str(claims.get("usr", "")),
        roles=list(identity.roles),
        permissions=sorted(identity.permissions),
        scope=grant.scope.value,
        scopes={p: s.value for p, s in grant.scopes.items()},
        branch_id=identity.branch_id,
        team_id=identity.team_id,
        region=identity.region,
        must_change_password=bool(claims.get("pwd_change")),
    )


@post("/api/v1/auth/totp/enrol", opt={"permission": AUTHENTICATED}, status_code=200)
async def enrol_totp(request: Request[Any, Any, Any]) -> TotpEnrolment:
    """Start enrolling a second factor: the secret and its otpauth URI (for an authenticator app)."""
    secret, uri = await _authenticator(request).enrol_totp(request.scope["state"]["identity"].user_id)
    return TotpEnrolment(secret=secret, otpauth_uri=uri)


@post("/api/v1/auth/totp/confirm", opt={"permission": AUTHENTICATED}, status_code=204)
async def confirm_totp(request: Request[Any, Any, Any], data: TotpConfirm) -> None:
    """Confirm enrolment with a first code; logins then require a code."""
    await _authenticator(request).confirm_totp(request.scope["state"]["identity"].user_id, data.otp)
