"""Team leads and branch heads: who may hold the position, and clearing it from someone who no longer may.

A team's lead is an active member of that team holding ``team_lead``; a branch's head an active user of that
branch holding ``branch_head``. Naming anyone else is refused, naming the field; and a holder who is moved,
disabled or loses the role is cleared from the position in the transaction that changed them, with the team's or
branch's event, so the services' org directories never name a lead who is not one.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_gateway import events
from crm_gateway.identity import branches, teams, users
from crm_platform.outbox import Outbox, utcnow
from crm_platform.validation import collect

TEAM_LEAD, BRANCH_HEAD = "team_lead", "branch_head"


async def check_holder(
    session: AsyncSession, field: str, user_id: str, role: str, *, branch_id: str, team_id: str | None = None
) -> None:
    """Raise a violation naming ``field`` unless ``user_id`` is an active user of ``branch_id`` (and of
    ``team_id``, when given) holding ``role``."""
    u = users.c
    row = (await session.execute(select(u.status, u.branch_id, u.team_id, u.roles).where(u.id == user_id))).first()
    with collect() as v:
        if row is None:
            v.add(field, f"user {user_id} does not exist")
        elif row.status != "active":
            v.add(field, f"user {user_id} is {row.status}, not active")
        elif row.branch_id != branch_id:
            v.add(field, f"user {user_id} works in branch {row.branch_id or 'none'}, not {branch_id}")
        elif team_id is not None and row.team_id != team_id:
            v.add(field, f"user {user_id} is in team {row.team_id or 'none'}, not {team_id}")
        elif role not in row.roles.split(","):
            v.add(field, f"user {user_id} does not hold the role {role}")


async def vacate_positions(session: AsyncSession, outbox: Outbox, actor_id: str, user_id: str) -> None:
    """Clear the lead and head positions ``user_id`` no longer qualifies for (after a move, a change of roles or
    a disable), each with its team's or branch's ``updated`` event."""
    u = users.c
    user = (await session.execute(select(u.status, u.branch_id, u.team_id, u.roles).where(u.id == user_id))).one()
    active, roles = user.status == "active", user.roles.split(",")
    led = (await session.execute(select(teams.c.id).where(teams.c.lead_id == user_id))).scalars().all()
    for team_id in led:
        if not (active and TEAM_LEAD in roles and user.team_id == team_id):
            await session.execute(update(teams).where(teams.c.id == team_id).values(lead_id=None, updated_at=utcnow()))
            await events.add_team_event(session, outbox, actor_id, "updated", team_id)
    headed = (await session.execute(select(branches.c.id).where(branches.c.head_id == user_id))).scalars().all()
    for branch_id in headed:
        if not (active and BRANCH_HEAD in roles and user.branch_id == branch_id):
            await session.execute(
                update(branches).where(branches.c.id == branch_id).values(head_id=None, updated_at=utcnow())
            )
            await events.add_branch_event(session, outbox, actor_id, "updated", branch_id)
