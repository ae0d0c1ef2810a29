"""The RBAC policy (``policy.yaml``): roles and service identities grant permissions, each with a data scope.

The file is the one place access is decided. A role has a default scope; a permission may name its own
(``{referral:create: branch}`` in a teller's list), narrower or wider than the default. A caller with several
roles holds each permission in the scope of the roles that grant it — never in another role's scope: a teller
who is also a lobby manager reads customers in the teller's ``own`` scope, not in the lobby's ``branch``.

Service identities (``svc:<name>``) are declared like roles under ``services:``: what a service may do when it
acts on its own (a sweep, a rule, a signing). The gateway signs users' identities with this policy; a service
signs its own with it, and a receiving server refuses a service identity claiming more than the policy grants.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from crm_platform.auth_context import SERVICE_PREFIX, Identity, Scope, ScopeMap

POLICY_FILE = Path(__file__).with_name("policy.yaml")

# Scopes ordered from narrowest to widest.
SCOPE_ORDER = (Scope.NONE, Scope.OWN, Scope.TEAM, Scope.BRANCH, Scope.REGION, Scope.ALL)


class PolicyError(ValueError):
    """The policy file is malformed (stops the start)."""


def widest(scopes: Any) -> Scope:
    """The widest of ``scopes`` (``none`` when empty)."""
    return max(scopes, key=SCOPE_ORDER.index, default=Scope.NONE)


@dataclass(frozen=True)
class Role:
    """One role's (or service identity's) grant: its default scope and each permission's scope."""

    name: str
    scope: Scope
    scopes: ScopeMap

    @property
    def permissions(self) -> frozenset[str]:
        """The permissions the role grants."""
        return frozenset(self.scopes)


@dataclass(frozen=True)
class Grant:
    """What a set of roles grants together."""

    scope: Scope  # the widest default scope of the roles (informative: every call acts under one permission)
    permissions: frozenset[str]
    scopes: ScopeMap


def _parse_role(name: str, spec: Any) -> Role:
    if not isinstance(spec, dict) or "scope" not in spec or "permissions" not in spec:
        raise PolicyError(f"{name}: needs scope and permissions")
    try:
        default = Scope(spec["scope"])
    except ValueError:
        raise PolicyError(f"{name}.scope: unknown scope {spec['scope']!r}") from None
    pairs: list[tuple[str, Scope]] = []
    for entry in spec["permissions"]:
        if isinstance(entry, str):
            pairs.append((entry, default))
        elif isinstance(entry, dict) and len(entry) == 1:
            ((permission, scope),) = entry.items()
            try:
                pairs.append((str(permission), Scope(scope)))
            except ValueError:
                raise PolicyError(f"{name}.permissions.{permission}: unknown scope {scope!r}") from None
        else:
            raise PolicyError(f"{name}.permissions: {entry!r} is neither a permission nor {{permission: scope}}")
    names = [p for p, _ in pairs]
    if len(names) != len(set(names)):
        raise PolicyError(f"{name}.permissions: a permission is listed twice")
    return Role(name, default, ScopeMap(pairs))


class Policy:
    """The loaded policy file."""

    def __init__(self, roles: dict[str, Role], services: dict[str, Role] | None = None) -> None:
        self.roles = roles
        self.services = services or {}
        self.permissions = frozenset(p for r in (*roles.values(), *self.services.values()) for p in r.permissions)

    @classmethod
    def load(cls, path: Path = POLICY_FILE) -> Policy:
        """Read and check the policy file; a malformed file stops the start."""
        raw: dict[str, Any] = yaml.safe_load(path.read_text())
        roles = {name: _parse_role(name, spec) for name, spec in raw["roles"].items()}
        services = {name: _parse_role(name, spec) for name, spec in (raw.get("services") or {}).items()}
        for name in roles:
            if name.startswith(SERVICE_PREFIX):
                raise PolicyError(f"roles.{name}: service identities belong under services:")
        for name in services:
            if not name.startswith(SERVICE_PREFIX):
                raise PolicyError(f"services.{name}: a service identity is named {SERVICE_PREFIX}<service>")
        return cls(roles, services)

    def grant(self, role_names: tuple[str, ...]) -> Grant:
        """What ``role_names`` grant together (unknown roles grant nothing): each permission in the widest scope
        among the roles that grant it."""
        return _grant(self, tuple(sorted(set(role_names))))

    def identity(
        self, user_id: str, roles: tuple[str, ...], branch_id: str, team_id: str, region: str, request_id: str
    ) -> Identity:
        """The identity a service receives for this user."""
        grant = self.grant(roles)
        return Identity(
            user_id, roles, grant.scope, branch_id, team_id, region, request_id, grant.permissions, grant.scopes
        )

    def service_identity(self, service: str, *, on_behalf_of: str = "", request_id: str = "") -> Identity:
        """The identity service ``service`` calls with when it acts on its own (``svc:<service>``)."""
        name = SERVICE_PREFIX + service
        role = self.services.get(name)
        if role is None:
            raise PolicyError(f"services.{name}: not declared in the policy")
        return Identity(
            name,
            (name,),
            role.scope,
            request_id=request_id,
            permissions=role.permissions,
            scopes=role.scopes,
            on_behalf_of=on_behalf_of,
        )

    def admits_service(self, identity: Identity) -> bool:
        """Whether a service identity claims no more than the policy grants it."""
        role = self.services.get(identity.user_id)
        if role is None:
            return False
        return identity.permissions <= role.permissions and all(
            SCOPE_ORDER.index(identity.scopes.get(p, identity.scope)) <= SCOPE_ORDER.index(role.scopes[p])
            for p in identity.permissions
        )


@functools.lru_cache(maxsize=512)
def _grant(policy: Policy, role_names: tuple[str, ...]) -> Grant:
    known = [policy.roles[r] for r in role_names if r in policy.roles]
    if not known:
        return Grant(Scope.NONE, frozenset(), ScopeMap())
    by_permission: dict[str, list[Scope]] = {}
    for role in known:
        for permission, scope in role.scopes.items():
            by_permission.setdefault(permission, []).append(scope)
    scopes = ScopeMap((p, widest(s)) for p, s in by_permission.items())
    return Grant(widest(r.scope for r in known), frozenset(scopes), scopes)


@functools.lru_cache(maxsize=1)
def default_policy() -> Policy:
    """The policy file shipped with the platform, read once."""
    return Policy.load()
