"""Administration of the organisation: branches and their heads, teams and their leads, users, roles, contacts.

Every change commits with its ``crm.identity.*`` event (outbox), so the services' copies of the org
structure follow. Rules here: codes and staff numbers are well-formed, a team belongs to the user's branch,
roles exist in the policy, a user created or reset by an admin must change the password first; the rules of
team leads and branch heads are in :mod:`crm_gateway.positions`, those of staff contacts in
:mod:`crm_gateway.staff_contacts`.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_gateway import events
from crm_gateway.auth import check_password_policy, hash_password
from crm_gateway.identity import branches, teams, users
from crm_gateway.policy import Policy
from crm_gateway.positions import BRANCH_HEAD, TEAM_LEAD, check_holder, vacate_positions
from crm_gateway.staff_contacts import CONTACT_CHANGED, StaffContacts, checked_email, checked_mobile
from crm_platform.auth_context import Identity
from crm_platform.errors import AlreadyExists, NotFound
from crm_platform.ids import new_id
from crm_platform.outbox import Outbox, utcnow
from crm_platform.pii import StaffContact, mask_email, mask_mobile
from crm_platform.validation import collect

_CODE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,31}$")
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,63}$")
_REGION = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def temporary_password() -> str:
    """A random password that satisfies the policy; the user must replace it at first login."""
    return f"Tmp-{secrets.token_urlsafe(12)}9a"


def is_valid_username(username: str) -> bool:
    """Whether ``username`` is a well-formed staff number."""
    return bool(_USERNAME.match(username))


class Organisation:
    """Branches, teams and users, as the admin API changes them.

    In the methods below an optional position or contact argument means: ``None`` keeps it, ``""`` clears it.
    """

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox, policy: Policy, contacts: StaffContacts
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._policy = policy
        self._contacts = contacts

    # Branches and teams -------------------------------------------------------------------------------

    async def create_branch(self, actor: Identity, branch_id: str, name: str, region: str) -> dict[str, Any]:
        """Add a branch (its head is named later, once they are a user of it)."""
        with collect() as v:
            if not _CODE.match(branch_id):
                v.add("id", "must be 1-32 upper-case letters, digits, '-' or '_'")
            name = v.require_text("name", name, max_length=100)
            if not _REGION.match(region):
                v.add("region", "must be 1-32 lower-case letters, digits, '-' or '_'")
        now = utcnow()
        try:
            async with self._sessions() as session, session.begin():
                await session.execute(
                    insert(branches).values(id=branch_id, name=name, region=region, created_at=now, updated_at=now)
                )
                await events.add_branch_event(session, self._outbox, actor.user_id, "created", branch_id)
        except IntegrityError:
            raise AlreadyExists(f"branch {branch_id} exists", existing_id=branch_id) from None
        return await self.get_branch(branch_id)

    async def update_branch(
        self, actor: Identity, branch_id: str, name: str | None, region: str | None, head_id: str | None = None
    ) -> dict[str, Any]:
        """Rename a branch, move it to another region, or name (``""``: clear) its head."""
        current = await self.get_branch(branch_id)
        with collect() as v:
            if name is not None:
                name = v.require_text("name", name, max_length=100)
            if region is not None and not _REGION.match(region):
                v.add("region", "must be 1-32 lower-case letters, digits, '-' or '_'")
        values: dict[str, Any] = {
            "name": name or current["name"],
            "region": region or current["region"],
            "updated_at": utcnow(),
        }
        if head_id is not None:
            values["head_id"] = head_id or None
        async with self._sessions() as session, session.begin():
            if head_id:
                await check_holder(session, "head_id", head_id, BRANCH_HEAD, branch_id=branch_id)
            await session.execute(update(branches).where(branches.c.id == branch_id).values(**values))
            await events.add_branch_event(session, self._outbox, actor.user_id, "updated", branch_id)
        return await self.get_branch(branch_id)

    async def get_branch(self, branch_id: str) -> dict[str, Any]:
        """One branch, or :class:`NotFound`."""
        async with self._sessions() as session:
            row = (await session.execute(select(branches).where(branches.c.id == branch_id))).first()
        if row is None:
            raise NotFound(f"branch {branch_id} not found")
        return dict(row._mapping)

    async def list_branches(self, *, limit: int, after: str = "") -> list[dict[str, Any]]:
        """Branches by code, the first ``limit`` after the code ``after``."""
        query = select(branches).where(branches.c.id > after).order_by(branches.c.id).limit(limit)
        async with self._sessions() as session:
            return [dict(r._mapping) for r in (await session.execute(query)).all()]

    async def create_team(self, actor: Identity, team_id: str, branch_id: str, name: str) -> dict[str, Any]:
        """Add a team to a branch (its lead is named later, once they are a member)."""
        with collect() as v:
            if not _CODE.match(team_id):
                v.add("id", "must be 1-32 upper-case letters, digits, '-' or '_'")
            name = v.require_text("name", name, max_length=100)
        await self.get_branch(branch_id)
        now = utcnow()
        try:
            async with self._sessions() as session, session.begin():
                await session.execute(
                    insert(teams).values(id=team_id, branch_id=branch_id, name=name, created_at=now, updated_at=now)
                )
                await events.add_team_event(session, self._outbox, actor.user_id, "created", team_id)
        except IntegrityError:
            raise AlreadyExists(f"team {team_id} exists", existing_id=team_id) from None
        return await self.get_team(team_id)

    async def update_team(
        self, actor: Identity, team_id: str, name: str | None, lead_id: str | None = None
    ) -> dict[str, Any]:
        """Rename a team, or name (``""``: clear) its lead."""
        current = await self.get_team(team_id)
        with collect() as v:
            if name is not None:
                name = v.require_text("name", name, max_length=100)
        values: dict[str, Any] = {"name": name or current["name"], "updated_at": utcnow()}
        if lead_id is not None:
            values["lead_id"] = lead_id or None
        async with self._sessions() as session, session.begin():
            if lead_id:
                await check_holder(
                    session, "lead_id", lead_id, TEAM_LEAD, branch_id=current["branch_id"], team_id=team_id
                )
            await session.execute(update(teams).where(teams.c.id == team_id).values(**values))
            await events.add_team_event(session, self._outbox, actor.user_id, "updated", team_id)
        return await self.get_team(team_id)

    async def list_teams(self, branch_id: str | None, *, limit: int, after: str = "") -> list[dict[str, Any]]:
        """Teams by code, optionally of one branch, the first ``limit`` after the code ``after``."""
        query = select(teams).where(teams.c.id > after).order_by(teams.c.id).limit(limit)
        if branch_id:
            query = query.where(teams.c.branch_id == branch_id)
        async with self._sessions() as session:
            return [dict(r._mapping) for r in (await session.execute(query)).all()]

    async def get_team(self, team_id: str) -> dict[str, Any]:
        """One team, or :class:`NotFound`."""
        async with self._sessions() as session:
            row = (await session.execute(select(teams).where(teams.c.id == team_id))).first()
        if row is None:
            raise NotFound(f"team {team_id} not found")
        return dict(row._mapping)

    # Users ---------------------------------------------------------------------------------------------

    async def create_user(
        self,
        actor: Identity,
        username: str,
        display_name: str,
        branch_id: str | None,
        team_id: str | None,
        roles: list[str],
        email: str | None = None,
        mobile: str | None = None,
    ) -> tuple[dict[str, Any], str]:
        """Add a staff member with a temporary password (returned once; must be changed at first login)."""
        contact = await self._check_user_fields(username, display_name, branch_id, team_id, roles, email, mobile)
        password = temporary_password()
        check_password_policy(password, username)
        now = utcnow()
        user_id = new_id()
        try:
            async with self._sessions() as session, session.begin():
                await session.execute(
                    insert(users).values(
                        id=user_id,
                        username=username,
                        display_name=display_name.strip(),
                        branch_id=branch_id,
                        team_id=team_id,
                        roles=",".join(roles),
                        status="active",
                        password_hash=hash_password(password),
                        must_change_password=True,
                        failed_logins=0,
                        totp_enabled=False,
                        created_at=now,
                        updated_at=now,
                    )
                )
                await events.add_user_event(session, self._outbox, actor.user_id, "created", user_id)
                if contact is not None and (contact.email or contact.mobile):
                    await self._set_contact(session, actor, user_id, contact)
        except IntegrityError:
            raise AlreadyExists(f"username {username} is taken") from None
        return await self.get_user(user_id), password

    async def update_user(
        self,
        actor: Identity,
        user_id: str,
        display_name: str | None,
        branch_id: str | None,
        team_id: str | None,
        email: str | None = None,
        mobile: str | None = None,
    ) -> dict[str, Any]:
        """Change a user's name, branch, team (a move changes what they see) or e-mail and mobile."""
        current = await self.get_user(user_id)
        name = display_name if display_name is not None else current["display_name"]
        branch = branch_id if branch_id is not None else current["branch_id"]
        team = team_id if team_id is not None else current["team_id"]
        contact = await self._check_user_fields(
            current["username"], name, branch, team, current["roles"], email, mobile
        )
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(display_name=name.strip(), branch_id=branch or None, team_id=team or None, updated_at=utcnow())
            )
            await events.add_user_event(session, self._outbox, actor.user_id, "updated", user_id)
            await vacate_positions(session, self._outbox, actor.user_id, user_id)
            if contact is not None:
                before = (await self._contacts.read(session, [user_id])).get(user_id, StaffContact("", ""))
                after = StaffContact(
                    before.email if email is None else contact.email,
                    before.mobile if mobile is None else contact.mobile,
                )
                if after != before:
                    await self._set_contact(session, actor, user_id, after)
        return await self.get_user(user_id)

    async def set_roles(self, actor: Identity, user_id: str, roles: list[str]) -> dict[str, Any]:
        """Replace a user's roles."""
        current = await self.get_user(user_id)
        await self._check_user_fields(
            current["username"], current["display_name"], current["branch_id"], current["team_id"], roles
        )
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(users).where(users.c.id == user_id).values(roles=",".join(roles), updated_at=utcnow())
            )
            await events.add_user_event(session, self._outbox, actor.user_id, "roles_changed", user_id)
            await vacate_positions(session, self._outbox, actor.user_id, user_id)
        return await self.get_user(user_id)

    async def disable_user(self, actor: Identity, user_id: str) -> dict[str, Any]:
        """Disable a user: no new logins, no token refresh."""
        await self.get_user(user_id)
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(users).where(users.c.id == user_id).values(status="disabled", updated_at=utcnow())
            )
            await events.add_user_event(session, self._outbox, actor.user_id, "disabled", user_id)
            await vacate_positions(session, self._outbox, actor.user_id, user_id)
        return await self.get_user(user_id)

    async def reset_password(self, actor: Identity, user_id: str) -> str:
        """Give a user a new temporary password (returned once); they must change it at next login."""
        user = await self.get_user(user_id)
        password = temporary_password()
        check_password_policy(password, user["username"])
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(
                    password_hash=hash_password(password),
                    must_change_password=True,
                    failed_logins=0,
                    locked_until=None,
                    updated_at=utcnow(),
                )
            )
        return password

    async def get_user(self, user_id: str) -> dict[str, Any]:
        """One user without secrets (e-mail and mobile masked), or :class:`NotFound`."""
        rows = await self._users(users.c.id == user_id, limit=1, after="")
        if not rows:
            raise NotFound(f"user {user_id} not found")
        return rows[0]

    async def list_users(
        self, *, branch_id: str | None, team_id: str | None, limit: int, after: str
    ) -> list[dict[str, Any]]:
        """Users by username, filtered by branch or team."""
        conditions = []
        if branch_id:
            conditions.append(users.c.branch_id == branch_id)
        if team_id:
            conditions.append(users.c.team_id == team_id)
        return await self._users(*conditions, limit=limit, after=after)

    async def _users(self, *conditions: Any, limit: int, after: str) -> list[dict[str, Any]]:
        columns = [
            users.c[n]
            for n in (
                "id",
                "username",
                "display_name",
                "branch_id",
                "team_id",
                "roles",
                "status",
                "must_change_password",
                "totp_enabled",
                "created_at",
                "updated_at",
            )
        ]
        query = (
            select(*columns, branches.c.region)
            .select_from(users.outerjoin(branches, users.c.branch_id == branches.c.id))
            .where(*conditions)
        )
        if after:
            query = query.where(users.c.username > after)
        async with self._sessions() as session:
            rows = (await session.execute(query.order_by(users.c.username).limit(limit))).all()
            contacts = await self._contacts.read(session, [r.id for r in rows])
        out = []
        for r in rows:
            m = dict(r._mapping)
            m["roles"] = [x for x in m["roles"].split(",") if x]
            m["region"] = m["region"] or ""
            contact = contacts.get(m["id"])
            # Masked only: the admin API never answers a staff member's e-mail or mobile in the clear.
            m["email"] = (mask_email(contact.email) or None) if contact else None
            m["mobile"] = (mask_mobile(contact.mobile) or None) if contact else None
            out.append(m)
        return out

    async def _check_user_fields(
        self,
        username: str,
        display_name: str,
        branch_id: str | None,
        team_id: str | None,
        roles: list[str],
        email: str | None = None,
        mobile: str | None = None,
    ) -> StaffContact | None:
        """Check the fields; answer the normalised contact given (None when neither e-mail nor mobile was)."""
        with collect() as v:
            if not _USERNAME.match(username):
                v.add("username", "must be a staff number: 2-64 letters, digits, '.', '-' or '_'")
            v.require_text("display_name", display_name, max_length=100)
            unknown = sorted(set(roles) - set(self._policy.roles))
            if not roles:
                v.add("roles", "at least one role is required")
            elif unknown:
                v.add("roles", f"unknown roles: {', '.join(unknown)}")
            if team_id and not branch_id:
                v.add("team_id", "a team needs the user's branch")
            contact = None
            if email is not None or mobile is not None:
                contact = StaffContact(checked_email(v, email or ""), checked_mobile(v, mobile or ""))
        async with self._sessions() as session:
            if branch_id:
                found = (await session.execute(select(func.count()).where(branches.c.id == branch_id))).scalar_one()
                if not found:
                    with collect() as v:
                        v.add("branch_id", f"branch {branch_id} does not exist")
            if team_id:
                owner = (await session.execute(select(teams.c.branch_id).where(teams.c.id == team_id))).scalar()
                with collect() as v:
                    if owner is None:
                        v.add("team_id", f"team {team_id} does not exist")
                    elif owner != branch_id:
                        v.add("team_id", f"team {team_id} belongs to branch {owner}, not {branch_id}")
        return contact

    async def _set_contact(self, session: AsyncSession, actor: Identity, user_id: str, contact: StaffContact) -> None:
        await self._contacts.write(session, user_id, contact)
        await self._outbox.add(
            session, CONTACT_CHANGED, self._contacts.event(user_id, contact), subject_id=user_id, actor=actor.user_id
        )
