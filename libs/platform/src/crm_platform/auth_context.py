"""The caller's identity and data scope, as the gateway (or a service acting on its own) sends it in signed
gRPC metadata.

Only the gateway holds ``CRM_INTERNAL_SECRET`` besides the services, so a service trusts identity metadata
only when its HMAC verifies; an unsigned, stale or replayed identity is refused (defence in depth, not trust).

The scope is per permission: a role grants each permission with a scope of its own (a teller reads customers
in scope ``own`` but refers them in scope ``branch``), and the metadata carries the map. ``Identity.scope`` is
the scope of the permission the call acts under — the gateway sets it from the route's permission, and a
service's server sets it again from the method's declared permission (:meth:`Identity.acting_as`).

A service acting on its own (a rule, a sweep) calls as ``svc:<name>`` with ``on_behalf_of`` naming the user or
rule that caused it, for the audit trail.
"""

from __future__ import annotations

import contextvars
import dataclasses
import enum
import functools
import hmac
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from crm_platform.errors import Unauthenticated

_PREFIX = "x-crm-"
# How old a signed identity may be (the calls carrying it have deadlines of seconds; clocks are NTP-synced).
MAX_SKEW_SECONDS = 60
SERVICE_PREFIX = "svc:"


class Scope(enum.StrEnum):
    """How far a caller's data access reaches."""

    NONE = "none"
    OWN = "own"
    TEAM = "team"
    BRANCH = "branch"
    REGION = "region"
    ALL = "all"


class ScopeMap(Mapping[str, Scope]):
    """Permission → scope, immutable, with its canonical text (what the signed metadata carries) worked out once."""

    __slots__ = ("_items", "text")

    def __init__(self, pairs: Iterable[tuple[str, Scope]] = ()) -> None:
        self._items = dict(sorted(pairs))
        self.text = ",".join(f"{p}={s.value}" for p, s in self._items.items())

    def __getitem__(self, permission: str) -> Scope:
        return self._items[permission]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    def __repr__(self) -> str:
        return f"ScopeMap({self.text!r})"


_NO_SCOPES = ScopeMap()


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
    # Each permission's own scope (a permission absent here falls back to ``scope``).
    scopes: Mapping[str, Scope] = _NO_SCOPES
    # For a service identity: the user or rule whose action caused the call (audit).
    on_behalf_of: str = ""

    def has(self, permission: str) -> bool:
        """Whether the caller holds ``permission``."""
        return permission in self.permissions

    @property
    def is_service(self) -> bool:
        """Whether this is a service acting on its own (``svc:<name>``)."""
        return self.user_id.startswith(SERVICE_PREFIX)

    def scope_for(self, permission: str) -> Scope:
        """The scope in which the caller holds ``permission`` (:attr:`Scope.NONE` when not held)."""
        if permission not in self.permissions:
            return Scope.NONE
        return self.scopes.get(permission, self.scope)

    def acting_as(self, permission: str) -> Identity:
        """This identity with ``scope`` set to the scope of ``permission``: what a call made under it may see."""
        scope = self.scope_for(permission)
        return self if scope is self.scope else dataclasses.replace(self, scope=scope)

    def _canonical(self, issued_at: str, nonce: str) -> bytes:
        parts = [
            self.user_id,
            ",".join(self.roles),
            self.scope.value,
            self.branch_id,
            self.team_id,
            self.region,
            self.request_id,
            _joined(self.permissions),
            _scopes_text(self.scopes),
            self.on_behalf_of,
            issued_at,
            nonce,
        ]
        return "\n".join(parts).encode()

    def to_metadata(self, secret: str, now: float | None = None) -> list[tuple[str, str]]:
        """Encode as signed gRPC metadata, with a fresh nonce (one signed identity serves one call)."""
        issued_at = str(int(now if now is not None else time.time()))
        nonce = secrets.token_hex(12)
        signature = _sign(secret, self._canonical(issued_at, nonce))
        return [
            (_PREFIX + "user", self.user_id),
            (_PREFIX + "roles", ",".join(self.roles)),
            (_PREFIX + "scope", self.scope.value),
            (_PREFIX + "branch", self.branch_id),
            (_PREFIX + "team", self.team_id),
            (_PREFIX + "region", self.region),
            (_PREFIX + "request-id", self.request_id),
            (_PREFIX + "permissions", _joined(self.permissions)),
            (_PREFIX + "scopes", _scopes_text(self.scopes)),
            (_PREFIX + "on-behalf-of", self.on_behalf_of),
            (_PREFIX + "issued-at", issued_at),
            (_PREFIX + "nonce", nonce),
            (_PREFIX + "signature", signature),
        ]

    @classmethod
    def from_metadata(
        cls,
        metadata: Iterable[tuple[str, str | bytes]],
        secret: str,
        now: float | None = None,
        replays: ReplayGuard | None = None,
    ) -> Identity:
        """Decode and verify identity metadata; raise :class:`Unauthenticated` when absent, forged, stale or (with
        ``replays``) already seen."""
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
            scopes=_scopes(values.get(_PREFIX + "scopes", "")),
            on_behalf_of=values.get(_PREFIX + "on-behalf-of", ""),
        )
        nonce = values.get(_PREFIX + "nonce", "")
        expected = _sign(secret, identity._canonical(issued_at, nonce))
        if not hmac.compare_digest(expected, values[_PREFIX + "signature"]):
            raise Unauthenticated("caller identity signature does not verify")
        if age > MAX_SKEW_SECONDS:
            raise Unauthenticated("caller identity is stale")
        if replays is not None and not replays.first_use(nonce, int(issued_at)):
            raise Unauthenticated("caller identity was used before (replayed)", reason="IDENTITY_REPLAYED")
        return identity


class ReplayGuard:
    """Remembers the nonces of the signed identities a server accepted within the skew window, so a captured
    call's metadata cannot be sent again. Two generations of nonces, each covering one window: memory stays
    bounded by the calls of two windows, and a nonce is remembered for at least one whole window after it
    stops being fresh enough to pass the age check anyway."""

    def __init__(self, window: int = MAX_SKEW_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        self._current: set[str] = set()
        self._previous: set[str] = set()
        self._rotated_at = clock()

    def first_use(self, nonce: str, issued_at: int) -> bool:
        """Record ``nonce``; False when it is empty or was seen before."""
        if not nonce:
            return False
        now = self._clock()
        if now - self._rotated_at >= self._window:
            self._previous, self._current = self._current, set()
            self._rotated_at = now
        if nonce in self._current or nonce in self._previous:
            return False
        self._current.add(nonce)
        return True


@functools.lru_cache(maxsize=256)
def _scopes(raw: str) -> ScopeMap:
    pairs = []
    for part in _split(raw):
        permission, _, scope = part.partition("=")
        pairs.append((permission, Scope(scope)))
    return ScopeMap(pairs)


def _scopes_text(scopes: Mapping[str, Scope]) -> str:
    return scopes.text if isinstance(scopes, ScopeMap) else ScopeMap(scopes.items()).text


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
