"""``/api/v1/admin/*``: branches, teams and users (permission ``admin:identity``); calendars are in
:mod:`crm_gateway.routes.calendars`."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, patch, post, put
from litestar.params import Parameter

from crm_gateway.organisation import Organisation
from crm_gateway.schemas.admin import (
    BranchCreate,
    BranchOut,
    BranchUpdate,
    PasswordReset,
    RolesUpdate,
    TeamCreate,
    TeamOut,
    TeamUpdate,
    UserCreate,
    UserCreated,
    UserOut,
    UserUpdate,
    patched,
)
from crm_gateway.schemas.paging import Cursor, Limit, Page

ADMIN = {"permission": "admin:identity"}
_Code = Annotated[str, Parameter(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]
_UserId = Annotated[str, Parameter(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


def _org(request: Request[Any, Any, Any]) -> Organisation:
    return request.app.state.organisation  # type: ignore[no-any-return]


def _actor(request: Request[Any, Any, Any]) -> Any:
    return request.scope["state"]["identity"]


@post("/api/v1/admin/branches", opt=ADMIN)
async def create_branch(request: Request[Any, Any, Any], data: BranchCreate) -> BranchOut:
    """Add a branch."""
    return BranchOut.of(await _org(request).create_branch(_actor(request), data.id, data.name, data.region))


@get("/api/v1/admin/branches", opt=ADMIN)
async def list_branches(request: Request[Any, Any, Any], limit: Limit = 50, cursor: Cursor = None) -> Page[BranchOut]:
    """Branches by code."""
    rows = await _org(request).list_branches(limit=limit + 1, after=cursor or "")
    items = [BranchOut.of(b) for b in rows[:limit]]
    return Page(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


@get("/api/v1/admin/branches/{branch_id:str}", opt=ADMIN)
async def get_branch(request: Request[Any, Any, Any], branch_id: _Code) -> BranchOut:
    """One branch, with its head."""
    return BranchOut.of(await _org(request).get_branch(branch_id))


@patch("/api/v1/admin/branches/{branch_id:str}", opt=ADMIN)
async def update_branch(request: Request[Any, Any, Any], branch_id: _Code, data: BranchUpdate) -> BranchOut:
    """Rename a branch, move it to another region, or name its head (``head_id``: an active user of the branch
    holding ``branch_head``; ``null`` or "" clears)."""
    org = _org(request)
    return BranchOut.of(
        await org.update_branch(_actor(request), branch_id, data.name, data.region, patched(data.head_id))
    )


@post("/api/v1/admin/teams", opt=ADMIN)
async def create_team(request: Request[Any, Any, Any], data: TeamCreate) -> TeamOut:
    """Add a team to a branch."""
    return TeamOut.of(await _org(request).create_team(_actor(request), data.id, data.branch_id, data.name))


@get("/api/v1/admin/teams", opt=ADMIN)
async def list_teams(
    request: Request[Any, Any, Any],
    branch_id: Annotated[str | None, Parameter(required=False, max_length=32)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[TeamOut]:
    """Teams by code, optionally of one branch."""
    rows = await _org(request).list_teams(branch_id, limit=limit + 1, after=cursor or "")
    items = [TeamOut.of(t) for t in rows[:limit]]
    return Page(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


@get("/api/v1/admin/teams/{team_id:str}", opt=ADMIN)
async def get_team(request: Request[Any, Any, Any], team_id: _Code) -> TeamOut:
    """One team, with its lead."""
    return TeamOut.of(await _org(request).get_team(team_id))


@patch("/api/v1/admin/teams/{team_id:str}", opt=ADMIN)
async def update_team(request: Request[Any, Any, Any], team_id: _Code, data: TeamUpdate) -> TeamOut:
    """Rename a team or name its lead (``lead_id``: an active member of the team holding ``team_lead``; ``null``
    or "" clears)."""
    return TeamOut.of(await _org(request).update_team(_actor(request), team_id, data.name, patched(data.lead_id)))


@post("/api/v1/admin/users", opt=ADMIN)
async def create_user(request: Request[Any, Any, Any], data: UserCreate) -> UserCreated:
    """Add a staff member (optionally with ``email`` and ``mobile``, stored encrypted, answered masked); the
    temporary password is shown once and must be changed at first login."""
    user, password = await _org(request).create_user(
        _actor(request),
        data.username,
        data.display_name,
        data.branch_id,
        data.team_id,
        data.roles,
        email=data.email,
        mobile=data.mobile,
    )
    return UserCreated(user=UserOut.of(user), temporary_password=password)


@get("/api/v1/admin/users", opt=ADMIN)
async def list_users(
    request: Request[Any, Any, Any],
    branch_id: Annotated[str | None, Parameter(required=False, max_length=32)] = None,
    team_id: Annotated[str | None, Parameter(required=False, max_length=32)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[UserOut]:
    """Users by staff number."""
    rows = await _org(request).list_users(branch_id=branch_id, team_id=team_id, limit=limit + 1, after=cursor or "")
    items = [UserOut.of(r) for r in rows[:limit]]
    return Page(items=items, next_cursor=items[-1].username if len(rows) > limit else None)


@get("/api/v1/admin/users/{user_id:str}", opt=ADMIN)
async def get_user(request: Request[Any, Any, Any], user_id: _UserId) -> UserOut:
    """One user."""
    return UserOut.of(await _org(request).get_user(user_id))


@patch("/api/v1/admin/users/{user_id:str}", opt=ADMIN)
async def update_user(request: Request[Any, Any, Any], user_id: _UserId, data: UserUpdate) -> UserOut:
    """Change a user's display name, branch, team, ``email`` or ``mobile`` (``null`` or "" clears those two)."""
    user = await _org(request).update_user(
        _actor(request),
        user_id,
        data.display_name,
        data.branch_id,
        data.team_id,
        email=patched(data.email),
        mobile=patched(data.mobile),
    )
    return UserOut.of(user)


@put("/api/v1/admin/users/{user_id:str}/roles", opt=ADMIN)
async def set_roles(request: Request[Any, Any, Any], user_id: _UserId, data: RolesUpdate) -> UserOut:
    """Replace a user's roles."""
    return UserOut.of(await _org(request).set_roles(_actor(request), user_id, data.roles))


@post("/api/v1/admin/users/{user_id:str}/disable", opt=ADMIN, status_code=200)
async def disable_user(request: Request[Any, Any, Any], user_id: _UserId) -> UserOut:
    """Disable a user (no login, no refresh)."""
    return UserOut.of(await _org(request).disable_user(_actor(request), user_id))


@post("/api/v1/admin/users/{user_id:str}/reset-password", opt=ADMIN, status_code=200)
async def reset_password(request: Request[Any, Any, Any], user_id: _UserId) -> PasswordReset:
    """A new temporary password for a user (shown once; must be changed at next login)."""
    return PasswordReset(temporary_password=await _org(request).reset_password(_actor(request), user_id))


ROUTES = [
    create_branch,
    list_branches,
    get_branch,
    update_branch,
    create_team,
    list_teams,
    get_team,
    update_team,
    create_user,
    list_users,
    get_user,
    update_user,
    set_roles,
    disable_user,
    reset_password,
]
