"""The org directory every service keeps, beside the customer directory: users with their roles, branch, team
and status; teams with their lead; branches with their head and region; business calendars — fed by the
gateway's ``crm.identity.*`` events, so a service finds a ticket handler's lead, a branch's head, "every RM of
team T" or a user's calendar without a call.

The gateway re-announces the whole organisation weekly (``*.announced``), so a service deployed after the
stream's retention still learns all of it from the stream. Facts older than those stored are ignored (a late
redelivery cannot undo a newer change). A user's move to another team moves the ``team_id`` of the customers
they own in the service's customer directory too (the customer service moves its own files the same way).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, DateTime, Integer, LargeBinary, MetaData, String, Table, Text, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from crm.identity.v1 import events_pb2
from crm_platform.calendar import Calendar, default_calendar
from crm_platform.directory import customer_directory
from crm_platform.inbox import Event, Handler, Subscription
from crm_platform.pii import StaffContact, open_staff_contact

org_metadata = MetaData()

org_users = Table(
    "org_users",
    org_metadata,
    Column("user_id", String(64), primary_key=True),
    Column("username", String(64), nullable=False, default=""),
    Column("display_name", String(100), nullable=False, default=""),
    Column("branch_id", String(64), nullable=False, default="", index=True),
    Column("team_id", String(64), nullable=False, default="", index=True),
    Column("region", String(64), nullable=False, default=""),
    Column("roles", String(500), nullable=False, default="", comment="comma-separated role names"),
    Column("status", String(20), nullable=False, default="active"),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

org_teams = Table(
    "org_teams",
    org_metadata,
    Column("team_id", String(64), primary_key=True),
    Column("branch_id", String(64), nullable=False, default=""),
    Column("name", String(100), nullable=False, default=""),
    Column("lead_id", String(64), nullable=False, default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

org_branches = Table(
    "org_branches",
    org_metadata,
    Column("branch_id", String(64), primary_key=True),
    Column("name", String(100), nullable=False, default=""),
    Column("region", String(64), nullable=False, default=""),
    Column("head_id", String(64), nullable=False, default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# A branch's own calendar, or the bank-wide default (branch_id ""); a branch without a row inherits the default.
org_calendars = Table(
    "org_calendars",
    org_metadata,
    Column("branch_id", String(64), primary_key=True),
    Column("spec", Text, nullable=False, comment="the calendar as JSON (crm_platform.calendar)"),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

DEFAULT_CALENDAR_KEY = ""


def create_org_tables(op: Any) -> None:
    """Create the org directory's tables in a service's migration (``op`` is ``alembic.op``)."""
    org_metadata.create_all(op.get_bind())


def drop_org_tables(op: Any) -> None:
    """Drop them (the downgrade)."""
    org_metadata.drop_all(op.get_bind())


@dataclass(frozen=True)
class OrgUser:
    """A staff member as the directory knows them."""

    user_id: str
    username: str
    display_name: str
    branch_id: str
    team_id: str
    region: str
    roles: tuple[str, ...]
    status: str

    @property
    def active(self) -> bool:
        """Whether the user may still act (not disabled)."""
        return self.status == "active"


def _user(row: Any) -> OrgUser:
    m = row._mapping
    return OrgUser(
        m["user_id"],
        m["username"],
        m["display_name"],
        m["branch_id"],
        m["team_id"],
        m["region"],
        tuple(r for r in m["roles"].split(",") if r),
        m["status"],
    )


class OrgDirectory:
    """Questions a service asks of the organisation, answered from its local tables (inside its own session)."""

    @staticmethod
    async def user(session: AsyncSession, user_id: str) -> OrgUser | None:
        """One user, or None when unknown here."""
        row = (await session.execute(select(org_users).where(org_users.c.user_id == user_id))).first()
        return _user(row) if row is not None else None

    @staticmethod
    async def lead_of(session: AsyncSession, user_id: str) -> str:
        """The lead of the user's team ("" when the user, the team or its lead is unknown)."""
        u, t = org_users.c, org_teams.c
        query = select(t.lead_id).select_from(org_users.join(org_teams, t.team_id == u.team_id))
        return (await session.execute(query.where(u.user_id == user_id))).scalar() or ""

    @staticmethod
    async def head_of(session: AsyncSession, branch_id: str) -> str:
        """The head of ``branch_id`` ("" when unknown)."""
        query = select(org_branches.c.head_id).where(org_branches.c.branch_id == branch_id)
        return (await session.execute(query)).scalar() or ""

    @staticmethod
    async def members(
        session: AsyncSession, *, team_id: str = "", branch_id: str = "", role: str = "", active_only: bool = True
    ) -> list[OrgUser]:
        """The users of a team or a branch, optionally only those holding ``role``, by username."""
        u = org_users.c
        query = select(org_users).order_by(u.username)
        if team_id:
            query = query.where(u.team_id == team_id)
        if branch_id:
            query = query.where(u.branch_id == branch_id)
        if active_only:
            query = query.where(u.status == "active")
        found = [_user(r) for r in (await session.execute(query)).all()]
        return [m for m in found if not role or role in m.roles]

    @staticmethod
    async def calendar(session: AsyncSession, branch_id: str) -> Calendar:
        """The business calendar of ``branch_id``: its own, else the bank-wide default, else the built-in one."""
        c = org_calendars.c
        rows = (
            await session.execute(select(c.branch_id, c.spec).where(c.branch_id.in_([branch_id, DEFAULT_CALENDAR_KEY])))
        ).all()
        specs = {r.branch_id: r.spec for r in rows}
        spec = specs.get(branch_id) or specs.get(DEFAULT_CALENDAR_KEY)
        return _parsed(spec) if spec else default_calendar()

    async def calendar_of_user(self, session: AsyncSession, user_id: str) -> Calendar:
        """The calendar of the user's branch."""
        user = await self.user(session, user_id)
        return await self.calendar(session, user.branch_id if user is not None else "")


@functools.lru_cache(maxsize=256)
def _parsed(spec: str) -> Calendar:
    # Calendars are immutable and expand themselves lazily: one parsed object per distinct JSON text.
    return Calendar.from_dict(json.loads(spec))


def calendar_to_proto(spec: Mapping[str, Any]) -> events_pb2.BusinessCalendar:
    """The wire form of a calendar's JSON shape (see :mod:`crm_platform.calendar`)."""
    weekly = [
        events_pb2.WorkingInterval(weekday=day, start=start, end=end)
        for day, intervals in spec.get("weekly", {}).items()
        for start, end in intervals
    ]
    return events_pb2.BusinessCalendar(
        time_zone=spec.get("time_zone", ""),
        weekly=weekly,
        holidays=list(spec.get("holidays", ())),
        makeup_days=list(spec.get("makeup_days", ())),
        makeup_as=spec.get("makeup_as", ""),
    )


def calendar_from_proto(message: events_pb2.BusinessCalendar) -> dict[str, Any]:
    """The JSON shape of a calendar from its wire form."""
    weekly: dict[str, list[list[str]]] = {}
    for interval in message.weekly:
        weekly.setdefault(interval.weekday, []).append([interval.start, interval.end])
    spec: dict[str, Any] = {
        "time_zone": message.time_zone or "Asia/Shanghai",
        "weekly": weekly,
        "holidays": list(message.holidays),
        "makeup_days": list(message.makeup_days),
    }
    if message.makeup_as:
        spec["makeup_as"] = message.makeup_as
    return spec


async def _upsert(session: AsyncSession, table: Table, key: str, values: dict[str, Any], as_of: dt.datetime) -> None:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    row = {**values, "updated_at": as_of}
    stmt = insert(table).values(**{key: values[key]}, **{k: v for k, v in row.items() if k != key})
    newer = table.c.updated_at <= stmt.excluded.updated_at
    await session.execute(stmt.on_conflict_do_update(index_elements=[key], set_=row, where=newer))


TeamMove = Callable[[AsyncSession, str, str, dt.datetime], Awaitable[None]]


async def move_directory_team(session: AsyncSession, owner_id: str, team_id: str, as_of: dt.datetime) -> None:
    """The customers ``owner_id`` owns follow them to ``team_id`` in the customer directory (older rows only, so
    a newer assignment handled first is not undone)."""
    d = customer_directory.c
    await session.execute(
        update(customer_directory)
        .where(d.owner_id == owner_id, d.team_id != team_id, d.updated_at <= as_of)
        .values(team_id=team_id, updated_at=as_of)
    )


async def on_user_changed(session: AsyncSession, event: Event, move_team: TeamMove = move_directory_team) -> None:
    """Keep a user's facts; a team move carries their customers along (see :func:`move_directory_team`)."""
    payload = event.payload
    assert isinstance(payload, events_pb2.UserChanged)
    before = await OrgDirectory.user(session, payload.user_id)
    await _upsert(
        session,
        org_users,
        "user_id",
        {
            "user_id": payload.user_id,
            "username": payload.username,
            "display_name": payload.display_name,
            "branch_id": payload.branch_id,
            "team_id": payload.team_id,
            "region": payload.region,
            "roles": ",".join(payload.roles),
            "status": payload.status or "active",
        },
        event.occurred_at,
    )
    after = await OrgDirectory.user(session, payload.user_id)
    applied = after is not None and after.team_id == payload.team_id  # an older fact was ignored by the upsert
    if before is not None and applied and before.team_id != payload.team_id and payload.team_id:
        await move_team(session, payload.user_id, payload.team_id, event.occurred_at)


async def on_team_changed(session: AsyncSession, event: Event) -> None:
    """Keep a team's branch, name and lead."""
    payload = event.payload
    assert isinstance(payload, events_pb2.TeamChanged)
    values = {
        "team_id": payload.team_id,
        "branch_id": payload.branch_id,
        "name": payload.name,
        "lead_id": payload.lead_id,
    }
    await _upsert(session, org_teams, "team_id", values, event.occurred_at)


async def on_branch_changed(session: AsyncSession, event: Event) -> None:
    """Keep a branch's name, region and head."""
    payload = event.payload
    assert isinstance(payload, events_pb2.BranchChanged)
    values = {
        "branch_id": payload.branch_id,
        "name": payload.name,
        "region": payload.region,
        "head_id": payload.head_id,
    }
    await _upsert(session, org_branches, "branch_id", values, event.occurred_at)


async def on_calendar_changed(session: AsyncSession, event: Event) -> None:
    """Keep a branch's (or the bank-wide) calendar; a removed branch calendar inherits the default again."""
    payload = event.payload
    assert isinstance(payload, events_pb2.CalendarChanged)
    c = org_calendars.c
    if not payload.HasField("calendar"):
        current = (await session.execute(select(c.version).where(c.branch_id == payload.branch_id))).scalar()
        if current is not None and current <= payload.version:
            await session.execute(org_calendars.delete().where(c.branch_id == payload.branch_id))
        return
    spec = json.dumps(calendar_from_proto(payload.calendar), ensure_ascii=False, sort_keys=True)
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    values = {"spec": spec, "version": payload.version, "updated_at": event.occurred_at}
    stmt = insert(org_calendars).values(branch_id=payload.branch_id, **values)
    newer = c.version <= stmt.excluded.version  # versions, not clocks: each change counts one up
    await session.execute(stmt.on_conflict_do_update(index_elements=["branch_id"], set_=values, where=newer))


IDENTITY_STREAM = "CRM_IDENTITY"
_USER_VERBS = ("created", "updated", "disabled", "roles_changed", "announced")
_ORG_VERBS = ("created", "updated", "announced")


def org_subscription(
    service: str,
    *,
    move_team: TeamMove = move_directory_team,
    extra: Mapping[str, Handler] | None = None,
) -> Subscription:
    """The durable consumer ``<service>-org-directory`` that keeps the org tables current. ``move_team`` is what a
    user's team move does to the service's customers (the customer directory by default); ``extra`` adds handlers
    for further identity subjects (the notification service keeps staff contacts)."""

    async def on_user(session: AsyncSession, event: Event) -> None:
        await on_user_changed(session, event, move_team)

    handlers: dict[str, Handler] = {f"crm.identity.user.{verb}": on_user for verb in _USER_VERBS}
    handlers.update({f"crm.identity.team.{verb}": on_team_changed for verb in _ORG_VERBS})
    handlers.update({f"crm.identity.branch.{verb}": on_branch_changed for verb in _ORG_VERBS})
    handlers.update({f"crm.identity.calendar.{verb}": on_calendar_changed for verb in ("updated", "announced")})
    handlers.update(extra or {})
    return Subscription(
        durable=f"{service}-org-directory", stream=IDENTITY_STREAM, subject="crm.identity.>", handlers=handlers
    )


def user_subjects() -> Sequence[str]:
    """The subjects a user's facts travel on (for the gateway, which publishes them)."""
    return tuple(f"crm.identity.user.{verb}" for verb in _USER_VERBS)


# Staff e-mail and mobile travel sealed to the notification service only (its migration creates this table; no
# other service keeps them). Sealed with CRM_STAFF_CONTACT_KEY, opened only when a message is sent.
staff_contact_metadata = MetaData()

staff_contacts = Table(
    "staff_contacts",
    staff_contact_metadata,
    Column("user_id", String(64), primary_key=True),
    Column("sealed", LargeBinary, nullable=False, comment="AES-GCM of {email, mobile}, bound to the user id"),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def create_staff_contact_tables(op: Any) -> None:
    """Create ``staff_contacts`` (the notification service's migration)."""
    staff_contact_metadata.create_all(op.get_bind())


def drop_staff_contact_tables(op: Any) -> None:
    """Drop it (the downgrade)."""
    staff_contact_metadata.drop_all(op.get_bind())


async def remember_staff_contact(session: AsyncSession, user_id: str, sealed: bytes, as_of: dt.datetime) -> None:
    """Keep the newest sealed contact of ``user_id``."""
    values = {"user_id": user_id, "sealed": sealed}
    await _upsert(session, staff_contacts, "user_id", values, as_of)


async def staff_contact(session: AsyncSession, key: bytes, user_id: str) -> StaffContact | None:
    """The opened e-mail and mobile of ``user_id`` (None when unknown here)."""
    sealed = (
        await session.execute(select(staff_contacts.c.sealed).where(staff_contacts.c.user_id == user_id))
    ).scalar()
    return open_staff_contact(key, user_id, sealed) if sealed is not None else None
