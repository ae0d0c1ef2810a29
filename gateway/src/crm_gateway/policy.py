"""RBAC policy: roles grant permissions and a data scope (``policy.yaml``), and the caller's identity."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from crm_platform.auth_context import Identity, Scope

POLICY_FILE = Path(__file__).with_name("policy.yaml")

# Scopes ordered from narrowest to widest; a user with several roles gets the widest.
_ORDER = [Scope.NONE, Scope.OWN, Scope.TEAM, Scope.BRANCH, Scope.REGION, Scope.ALL]

# Permissions that exist; routes must name one of these (or ``public`` / ``authenticated``).
PUBLIC = "public"
AUTHENTICATED = "authenticated"


# The framework serves the OpenAPI documents here; they are public documentation, not data.
OPENAPI_PATH = "/schema"


def is_automatic_options(handler: Any) -> bool:
    """Litestar adds an OPTIONS handler to every path (it answers ``Allow`` only, no data): public by design."""
    return getattr(handler, "http_methods", None) == {"OPTIONS"} and handler.handler_name == "options_handler"


@dataclass(frozen=True)
class Role:
    """One role's grant."""

    name: str
    scope: Scope
    permissions: frozenset[str]


class Policy:
    """The loaded policy file."""

    def __init__(self, roles: dict[str, Role]) -> None:
        self.roles = roles
        self.permissions = frozenset(p for r in roles.values() for p in r.permissions)

    @classmethod
    def load(cls, path: Path = POLICY_FILE) -> Policy:
        """Read and check the policy file; a malformed file stops the start."""
        raw: dict[str, Any] = yaml.safe_load(path.read_text())
        roles = {}
        for name, spec in raw["roles"].items():
            roles[name] = Role(name, Scope(spec["scope"]), frozenset(spec["permissions"]))
        return cls(roles)

    def grant(self, role_names: tuple[str, ...]) -> tuple[Scope, frozenset[str]]:
        """The widest scope and the union of permissions of ``role_names`` (unknown roles grant nothing)."""
        known = [self.roles[r] for r in role_names if r in self.roles]
        if not known:
            return Scope.NONE, frozenset()
        scope = max((r.scope for r in known), key=_ORDER.index)
        permissions = frozenset().union(*(r.permissions for r in known))
        return scope, permissions

    def identity(
        self, user_id: str, roles: tuple[str, ...], branch_id: str, team_id: str, region: str, request_id: str
    ) -> Identity:
        """The identity a service receives for this user."""
        scope, permissions = self.grant(roles)
        return Identity(user_id, roles, scope, branch_id, team_id, region, request_id, permissions)


@dataclass(frozen=True)
class Explanation:
    """Whether a user may see and change a record, and the rule that decides."""

    can_read: bool
    can_write: bool
    scope: Scope
    rule: str


def explain(
    policy: Policy, roles: tuple[str, ...], user: dict[str, str], record: dict[str, str], read: str, write: str
) -> Explanation:
    """Decide with the enforcing code itself: the policy's grant, then the services' scope rule.

    ``user`` and ``record`` carry ``id``/``owner``, ``team``, ``branch`` and ``region``.
    """
    from crm_platform.scope import in_scope

    scope, permissions = policy.grant(roles)
    identity = Identity(user["id"], roles, scope, user["branch"], user["team"], user["region"], "", permissions)
    inside = in_scope(
        identity, owner=record["owner"], team=record["team"], branch=record["branch"], region=record["region"]
    )
    granted = [r for r in roles if r in policy.roles]
    if not granted:
        return Explanation(False, False, scope, "the user holds no known role")
    if read not in permissions:
        return Explanation(False, False, scope, f"roles {', '.join(granted)} grant no {read}")
    where = {
        Scope.OWN: f"owner is {record['owner'] or 'nobody (branch pool)'}, the user is {user['id']}",
        Scope.TEAM: f"record's team is {record['team'] or 'none'}, the user's team is {user['team'] or 'none'}",
        Scope.BRANCH: f"record's branch is {record['branch']}, the user's branch is {user['branch'] or 'none'}",
        Scope.REGION: f"record's region is {record['region']}, the user's region is {user['region'] or 'none'}",
        Scope.ALL: "scope all covers every record",
        Scope.NONE: "scope none covers no record",
    }[scope]
    verdict = "inside" if inside else "outside"
    rule = f"roles {', '.join(granted)} grant {read} with scope {scope.value}; {where}: {verdict} the scope"
    return Explanation(inside, inside and write in permissions, scope, rule)
