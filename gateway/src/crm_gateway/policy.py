"""The gateway's side of the RBAC policy (``crm_platform.policy``): route markers and the access explanation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crm_platform.auth_context import Identity, Scope
from crm_platform.policy import POLICY_FILE, Policy, Role

__all__ = ["AUTHENTICATED", "OPENAPI_PATH", "POLICY_FILE", "PUBLIC", "Explanation", "Policy", "Role", "explain"]

# Permissions that exist; routes must name one of these (or ``public`` / ``authenticated``).
PUBLIC = "public"
AUTHENTICATED = "authenticated"


# The framework serves the OpenAPI documents here; they are public documentation, not data.
OPENAPI_PATH = "/schema"


def is_automatic_options(handler: Any) -> bool:
    """Litestar adds an OPTIONS handler to every path (it answers ``Allow`` only, no data): public by design."""
    return getattr(handler, "http_methods", None) == {"OPTIONS"} and handler.handler_name == "options_handler"


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

    grant = policy.grant(roles)
    permissions = grant.permissions
    scope = grant.scopes.get(read, Scope.NONE)  # the scope of the read permission, from the roles granting it
    identity = Identity(
        user["id"], roles, scope, user["branch"], user["team"], user["region"], "", permissions, grant.scopes
    )
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
