"""What the gateway publishes about the organisation (``crm.identity.*``), and the payloads built from its rows.

One builder per fact, shared by the admin changes (:mod:`crm_gateway.organisation`, :mod:`crm_gateway.calendars`)
and the weekly re-announcement (:mod:`crm_gateway.announcement`), so a service learns the same shape either way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm.identity.v1 import events_pb2
from crm_gateway.identity import branches, teams, users
from crm_platform.org import calendar_to_proto
from crm_platform.outbox import Outbox

CALENDAR_UPDATED = "crm.identity.calendar.updated"
CALENDAR_ANNOUNCED = "crm.identity.calendar.announced"


def branch_subject(verb: str) -> str:
    """``crm.identity.branch.<verb>`` (created, updated, announced)."""
    return f"crm.identity.branch.{verb}"


def team_subject(verb: str) -> str:
    """``crm.identity.team.<verb>`` (created, updated, announced)."""
    return f"crm.identity.team.{verb}"


def user_subject(verb: str) -> str:
    """``crm.identity.user.<verb>`` (created, updated, disabled, roles_changed, announced)."""
    return f"crm.identity.user.{verb}"


def branch_changed(row: Mapping[Any, Any]) -> events_pb2.BranchChanged:
    """A ``branches`` row as its event."""
    return events_pb2.BranchChanged(
        branch_id=row["id"], name=row["name"], region=row["region"], head_id=row["head_id"] or ""
    )


def team_changed(row: Mapping[Any, Any]) -> events_pb2.TeamChanged:
    """A ``teams`` row as its event."""
    return events_pb2.TeamChanged(
        team_id=row["id"], branch_id=row["branch_id"], name=row["name"], lead_id=row["lead_id"] or ""
    )


def users_with_region() -> Select[Any]:
    """``users`` with their branch's ``region`` (what :func:`user_changed` takes)."""
    return select(users, branches.c.region).select_from(users.outerjoin(branches, users.c.branch_id == branches.c.id))


def user_changed(row: Mapping[Any, Any]) -> events_pb2.UserChanged:
    """A row of :func:`users_with_region` as its event."""
    return events_pb2.UserChanged(
        user_id=row["id"],
        username=row["username"],
        display_name=row["display_name"],
        branch_id=row["branch_id"] or "",
        team_id=row["team_id"] or "",
        region=row["region"] or "",
        roles=[x for x in row["roles"].split(",") if x],
        status=row["status"],
    )


def calendar_changed(branch_id: str, spec: str | None, version: int) -> events_pb2.CalendarChanged:
    """A ``calendars`` row as its event: without ``calendar`` when the branch's own was removed."""
    message = events_pb2.CalendarChanged(branch_id=branch_id, version=version)
    if spec is not None:
        message.calendar.CopyFrom(calendar_to_proto(json.loads(spec)))
    return message


def calendar_subject_id(branch_id: str) -> str:
    """The envelope's subject id of a calendar: the branch, or ``default`` for the bank-wide one."""
    return branch_id or "default"


async def add_branch_event(session: AsyncSession, outbox: Outbox, actor_id: str, verb: str, branch_id: str) -> None:
    """The branch's event, as its row now is, in ``session``'s transaction."""
    row = (await session.execute(select(branches).where(branches.c.id == branch_id))).one()._mapping
    await outbox.add(session, branch_subject(verb), branch_changed(row), subject_id=branch_id, actor=actor_id)


async def add_team_event(session: AsyncSession, outbox: Outbox, actor_id: str, verb: str, team_id: str) -> None:
    """The team's event, as its row now is, in ``session``'s transaction."""
    row = (await session.execute(select(teams).where(teams.c.id == team_id))).one()._mapping
    await outbox.add(session, team_subject(verb), team_changed(row), subject_id=team_id, actor=actor_id)


async def add_user_event(session: AsyncSession, outbox: Outbox, actor_id: str, verb: str, user_id: str) -> None:
    """The user's event, as their row now is, in ``session``'s transaction."""
    row = (await session.execute(users_with_region().where(users.c.id == user_id))).one()._mapping
    await outbox.add(session, user_subject(verb), user_changed(row), subject_id=user_id, actor=actor_id)
