"""The caller's identity and data scope, as the gateway sends it to services in signed gRPC metadata.

Only the gateway holds ``CRM_INTERNAL_SECRET`` besides the services, so a service trusts identity metadata
only when its HMAC verifies; an unsigned or stale identity is refused (defence in depth, not trust).
"""

from __future__ import annotations

import contextvars
import enum
import functools
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from crm_platform.errors import Unauthenticated

_PREFIX = "x-crm-"
_MAX_SKEW_SECONDS = 300


class Scope(enum.StrEnum):
    """How far a caller's data access reaches."""

    NONE = "none"
    OWN = "own"
    TEAM = "team"
    BRANCH = "branch"
    REGION = "region"
    ALL = "all"


@dataclass(frozen=True)
class Identity:
    """Who is calling, in what roles, and how far their data scope reaches."""

    user_id: str
    roles: tuple[str, ...] = ()
    scope: Scope = Scope.NONE
    branch_id: str = ""
    team_id: str = ""
    region: str = ""
    request_id: str = ""
    permissions: frozenset[str] = field(default_factory=frozenset)

    def has(self, permission: str) -> bool:
        """Whether the caller holds ``permission``."""
        return permission in self.permissions

    def _canonical(self, issued_at: str) -> bytes:
        parts = [
            self.user_id,
            ",".join(self.roles),
            self.scope.value,
            self.branch_id,
            self.team_id,
            self.region,
            self.request_id,
            _joined(self.permissions),
            issued_at,
        ]
        return "\n".join(parts).encode()

    def to_metadata(self, secret: str, now: float | None = None) -> list[tuple[str, str]]:
        """Encode as signed gRPC metadata."""
        issued_at = str(int(now if now is not None else time.time()))
        signature = _sign(secret, self._canonical(issued_at))
        return [
            (_PREFIX + "user", self.user_id),
            (_PREFIX + "roles", ",".join(self.roles)),
            (_PREFIX + "scope", self.scope.value),
            (_PREFIX + "branch", self.branch_id),
            (_PREFIX + "team", self.team_id),
            (_PREFIX + "region", self.region),
            (_PREFIX + "request-id", self.request_id),
            (_PREFIX + "permissions", _joined(self.permissions)),
            (_PREFIX + "issued-at", issued_at),
            (_PREFIX + "signature", signature),
        ]

    @classmethod
    def from_metadata(
        cls, metadata: Iterable[tuple[str, str | bytes]], secret: str, now: float | None = None
    ) -> Identity:
        """Decode and verify identity metadata; raise :class:`Unauthenticated` when absent, forged or stale."""
        values = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in metadata if k.startswith(_PREFIX)}
        if "x-crm-user" not in values or "x-crm-signature" not in values:
            raise Unauthenticated("call carries no caller identity")
        try:
            scope = Scope(values.get(_PREFIX + "scope", "none"))
            issued_at = values.get(_PREFIX + "issued-at", "")
            age = abs((now if now is not None else time.time()) - int(issued_at))
        except ValueError:
            raise Unauthenticated("caller identity is malformed") from None
        identity = cls(
            user_id=values[_PREFIX + "user"],
            roles=_roles(values.get(_PREFIX + "roles", "")),
            scope=scope,
            branch_id=values.get(_PREFIX + "branch", ""),
            team_id=values.get(_PREFIX + "team", ""),
            region=values.get(_PREFIX + "region", ""),
            request_id=values.get(_PREFIX + "request-id", ""),
            permissions=_permission_set(values.get(_PREFIX + "permissions", "")),
        )
        expected = _sign(secret, identity._canonical(issued_at))
        if not hmac.compare_digest(expected, values[_PREFIX + "signature"]):
            raise Unauthenticated("caller identity signature does not verify")
        if age > _MAX_SKEW_SECONDS:
            raise Unauthenticated("caller identity is stale")
        return identity


def _split(raw: str) -> tuple[str, ...]:
    return tuple(part for part in raw.split(",") if part)


# A handful of distinct role and permission lists (one per role mix) arrive with every call: parse each once.
@functools.lru_cache(maxsize=256)
def _roles(raw: str) -> tuple[str, ...]:
    return _split(raw)


@functools.lru_cache(maxsize=256)
def _permission_set(raw: str) -> frozenset[str]:
    return frozenset(_split(raw))


@functools.lru_cache(maxsize=256)
def _joined(permissions: frozenset[str]) -> str:
    return ",".join(sorted(permissions))


@functools.lru_cache(maxsize=8)
def _key(secret: str) -> bytes:
    return secret.encode()


def _sign(secret: str, canonical: bytes) -> str:
    # hmac.digest with the digest's name is OpenSSL's one-shot HMAC, the cheapest form on every call.
    return hmac.digest(_key(secret), canonical, "sha256").hex()


SYSTEM = Identity(user_id="system", roles=("system",), scope=Scope.ALL)

_current: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("crm_identity", default=None)


def current_identity() -> Identity:
    """The identity of the call being served; raise :class:`Unauthenticated` outside a call."""
    identity = _current.get()
    if identity is None:
        raise Unauthenticated("no caller identity in this context")
    return identity


def set_identity(identity: Identity | None) -> contextvars.Token[Identity | None]:
    """Bind ``identity`` to the current context (used by the server interceptor and tests)."""
    return _current.set(identity)


def reset_identity(token: contextvars.Token[Identity | None]) -> None:
    """Undo :func:`set_identity`."""
    _current.reset(token)
