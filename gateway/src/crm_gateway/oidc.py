"""Bearer tokens of an external OIDC provider (the bank's single sign-on), checked against its JWKS.

The provider vouches for who the user is and which CRM roles they hold (a claim, mapped to the roles the
policy knows); the CRM's own identity store still says where they work (branch, team), so data scope stays
the CRM's decision. A user unknown to the CRM, or disabled in it, is refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import jwt

from crm_gateway.identity import IdentityStore, User
from crm_gateway.policy import Policy
from crm_platform.auth_context import Identity
from crm_platform.errors import Unauthenticated

_ORG_CACHE_SECONDS = 60.0
log = logging.getLogger(__name__)


class OidcVerifier:
    """Verifies RS/ES-signed tokens of one issuer and maps them to a CRM identity."""

    def __init__(
        self,
        store: IdentityStore,
        policy: Policy,
        issuer: str,
        jwks_url: str,
        audience: str,
        roles_claim: str,
        username_claim: str,
    ) -> None:
        self.issuer = issuer
        self._store = store
        self._policy = policy
        self._audience = audience
        self._roles_claim = roles_claim
        self._username_claim = username_claim
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5)
        self._org: dict[str, tuple[float, User | None]] = {}

    async def verify(self, token: str, request_id: str) -> tuple[Identity, dict[str, Any]]:
        """The caller's identity from a provider token, or :class:`Unauthenticated`."""
        try:
            # The key fetch may block on the network when the cache is cold: keep it off the event loop.
            key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256", "ES256", "PS256"],
                issuer=self.issuer,
                audience=self._audience,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("access token expired", reason="TOKEN_EXPIRED") from None
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            log.info("provider token refused", extra={"error": repr(exc)})
            raise Unauthenticated("invalid access token") from None
        username = str(claims.get(self._username_claim, ""))
        user = await self._user(username)
        if user is None or user.status != "active":
            raise Unauthenticated("user is not known to the CRM or is disabled")
        granted = claims.get(self._roles_claim, [])
        roles = tuple(r for r in (granted if isinstance(granted, list) else []) if r in self._policy.roles)
        identity = self._policy.identity(user.id, roles, user.branch_id, user.team_id, user.region, request_id)
        return identity, {"sub": user.id, "usr": user.username, "sid": f"oidc:{claims.get('sid', '')}", **claims}

    async def _user(self, username: str) -> User | None:
        now = time.monotonic()
        cached = self._org.get(username)
        if cached is not None and now - cached[0] < _ORG_CACHE_SECONDS:
            return cached[1]
        user = await self._store.user_by_username(username) if username else None
        self._org[username] = (now, user)
        return user
