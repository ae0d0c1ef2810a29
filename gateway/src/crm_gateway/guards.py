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
    limits.api_address.hit(limits.client_address(connection.scope))
    if permission == PUBLIC:
        return
    header = _authorization(connection.scope["headers"])
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
    # The call acts under the route's permission, so in that permission's scope (services narrow it again).
    connection.scope["state"]["identity"] = identity.acting_as(permission)


def _authorization(headers: list[tuple[bytes, bytes]]) -> str:
    """The ``Authorization`` header from the raw ASGI headers (cheaper than building Litestar's ``Headers``)."""
    for key, value in headers:
        if key == b"authorization":
            return value.decode("latin-1")
    return ""


def _issuer(token: str) -> str:
    """The unverified ``iss`` of a token, only to pick which verifier checks it."""
    try:
        return str(jwt.decode(token.strip(), options={"verify_signature": False}).get("iss", ""))
    except jwt.PyJWTError:
        return ""
