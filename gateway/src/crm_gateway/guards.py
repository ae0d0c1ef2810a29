"""The one guard: authenticate the bearer token, then require the route's declared permission."""

from __future__ import annotations

from typing import Any

import jwt
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from crm_gateway.auth import Authenticator, require_password_changed
from crm_gateway.policy import AUTHENTICATED, OPENAPI_PATH, PUBLIC, is_automatic_options
from crm_gateway.ratelimit import Limits
from crm_platform.errors import PermissionDenied, Unauthenticated


async def permission_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Raise unless the caller holds the handler's ``opt["permission"]`` (``public`` needs no token)."""
    if is_automatic_options(handler) or connection.scope["path"].startswith(OPENAPI_PATH):
        return
    permission = handler.opt.get("permission")
    if permission is None:  # unreachable once the start-up check passed; fail closed anyway
        raise PermissionDenied("route declares no permission")
    limits: Limits = connection.app.state.limits
    client = connection.scope.get("client") or ("unknown", 0)
    limits.api_address.hit(str(client[0]))
    if permission == PUBLIC:
        return
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("bearer token required")
    request_id = connection.scope.get("state", {}).get("request_id", "")
    oidc = connection.app.state.oidc
    if oidc is not None and _issuer(token) == oidc.issuer:
        identity, claims = await oidc.verify(token.strip(), request_id)
    else:
        authenticator: Authenticator = connection.app.state.authenticator
        identity, claims = authenticator.verify(token.strip(), request_id)
    limits.api_user.hit(identity.user_id)
    connection.scope["state"]["identity"] = identity
    connection.scope["state"]["claims"] = claims
    if permission == AUTHENTICATED:
        return
    require_password_changed(claims)
    if not identity.has(permission):
        raise PermissionDenied(f"requires permission {permission}")


def _issuer(token: str) -> str:
    """The unverified ``iss`` of a token, only to pick which verifier checks it."""
    try:
        return str(jwt.decode(token.strip(), options={"verify_signature": False}).get("iss", ""))
    except jwt.PyJWTError:
        return ""
