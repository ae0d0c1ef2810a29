"""The identity store: branches, teams, users and refresh-token families (the gateway's own database)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm.identity.v1 import events_pb2
from crm_gateway.revocations import SESSION_REVOKED
from crm_platform.db import as_utc
from crm_platform.ids import new_id
from crm_platform.outbox import Outbox, utcnow

metadata = MetaData()

branches = Table(
    "branches",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("region", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The branch head (网点负责人), a user id; no foreign key, as users already point at branches (the rules are
    # checked by crm_gateway.organisation, and a head who leaves the branch or the role is cleared there).
    Column("head_id", String(36)),
)
teams = Table(
    "teams",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("branch_id", String(32), ForeignKey("branches.id"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("lead_id", String(36)),  # the team lead (团队主管), a user id; see branches.head_id
)
users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", String(100), nullable=False),
    Column("branch_id", String(32), ForeignKey("branches.id")),
    Column("team_id", String(32), ForeignKey("teams.id")),
    Column("roles", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("must_change_password", Boolean, nullable=False),
    Column("failed_logins", Integer, nullable=False),
    Column("first_failed_at", DateTime(timezone=True)),
    Column("locked_until", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("totp_secret", String(200)),
    Column("totp_enabled", Boolean, nullable=False, default=False),
)
password_history = Table(
    "password_history",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
# Business calendars as organisation data: a branch's own, or the bank-wide default (branch_id ""). A removed
# branch calendar stays as a row without spec, so its version keeps counting up (the services' copies order
# changes by version, crm_platform.org.on_calendar_changed).
calendars = Table(
    "calendars",
    metadata,
    Column("branch_id", String(32), primary_key=True),
    Column("spec", Text, comment="the calendar's JSON shape (crm_platform.calendar); NULL = removed, inherits"),
    Column("version", Integer, nullable=False),
    Column("updated_by", String(64), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
# Staff e-mail and mobile, encrypted with a data key of the user's own, wrapped by the PII master key ``kid``.
staff_contacts = Table(
    "staff_contacts",
    metadata,
    Column("user_id", String(36), ForeignKey("users.id"), primary_key=True),
    Column("kid", String(32), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("email_enc", LargeBinary),
    Column("mobile_enc", LargeBinary),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id"), nullable=False),
    Column("family_id", String(36), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class User:
    """A staff member as the gateway authenticates and authorises them."""

    id: str
    username: str
    display_name: str
    branch_id: str
    team_id: str
    region: str
    roles: tuple[str, ...]
    status: str
    password_hash: str
    must_change_password: bool
    failed_logins: int
    first_failed_at: dt.datetime | None
    locked_until: dt.datetime | None
    totp_secret: str | None = None
    totp_enabled: bool = False


class IdentityStore:
    """Queries and updates of the identity tables."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox | None = None) -> None:
        self.sessions = sessions
        # Where session revocations are announced to the other replicas (set once the relay runs).
        self.outbox = outbox

    async def user_by_username(self, username: str) -> User | None:
        """The user with this staff number, with their branch's region."""
        return await self._user(users.c.username == username)

    async def user_by_id(self, user_id: str) -> User | None:
        """The user with this id."""
        return await self._user(users.c.id == user_id)

    async def _user(self, condition: object) -> User | None:
        query = (
            select(users, branches.c.region)
            .select_from(users.outerjoin(branches, users.c.branch_id == branches.c.id))
            .where(condition)  # type: ignore[arg-type]
        )
        async with self.sessions() as session:
            row = (await session.execute(query)).first()
        if row is None:
            return None
        m = row._mapping
        return User(
            id=m["id"],
            username=m["username"],
            display_name=m["display_name"],
            branch_id=m["branch_id"] or "",
            team_id=m["team_id"] or "",
            region=m["region"] or "",
            roles=tuple(r for r in m["roles"].split(",") if r),
            status=m["status"],
            password_hash=m["password_hash"],
            must_change_password=m["must_change_password"],
            failed_logins=m["failed_logins"],
            first_failed_at=as_utc(m["first_failed_at"]) if m["first_failed_at"] else None,
            locked_until=as_utc(m["locked_until"]) if m["locked_until"] else None,
            totp_secret=m["totp_secret"],
            totp_enabled=bool(m["totp_enabled"]),
        )

    async def record_failure(
        self, user_id: str, failed_logins: int, first_failed_at: dt.datetime, locked_until: dt.datetime | None
    ) -> None:
        """Store the failure count of the current window and a lock, if any."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(
                    failed_logins=failed_logins,
                    first_failed_at=first_failed_at,
                    locked_until=locked_until,
                    updated_at=utcnow(),
                )
            )

    async def record_success(self, user_id: str) -> None:
        """Clear the failure count after a good login."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(failed_logins=0, first_failed_at=None, locked_until=None)
            )

    async def set_password(self, user_id: str, password_hash: str, must_change: bool) -> None:
        """Replace a user's password hash, keeping the old one in the history (no reuse of the last five)."""
        async with self.sessions() as session, session.begin():
            old = (await session.execute(select(users.c.password_hash).where(users.c.id == user_id))).scalar_one()
            await session.execute(
                insert(password_history).values(id=new_id(), user_id=user_id, password_hash=old, created_at=utcnow())
            )
            await session.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(
                    password_hash=password_hash,
                    must_change_password=must_change,
                    failed_logins=0,
                    locked_until=None,
                    updated_at=utcnow(),
                )
            )

    async def recent_password_hashes(self, user_id: str, count: int) -> list[str]:
        """The current hash and the ``count - 1`` previous ones, newest first."""
        async with self.sessions() as session:
            current = (await session.execute(select(users.c.password_hash).where(users.c.id == user_id))).scalar_one()
            older = (
                await session.execute(
                    select(password_history.c.password_hash)
                    .where(password_history.c.user_id == user_id)
                    .order_by(password_history.c.created_at.desc())
                    .limit(count - 1)
                )
            ).scalars()
            return [current, *older]

    async def set_totp(self, user_id: str, encrypted_secret: str | None, enabled: bool) -> None:
        """Store a (pending or confirmed) TOTP secret, encrypted, or remove it."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(totp_secret=encrypted_secret, totp_enabled=enabled, updated_at=utcnow())
            )

    async def branch_region(self, branch_id: str) -> str:
        """The region of a branch ('' when unknown)."""
        async with self.sessions() as session:
            region = (await session.execute(select(branches.c.region).where(branches.c.id == branch_id))).scalar()
        return region or ""

    async def count_users(self) -> int:
        """How many users exist (the demo seed runs only on an empty store)."""
        async with self.sessions() as session:
            return int((await session.execute(select(func.count()).select_from(users))).scalar_one())

    async def add_refresh_token(self, token_hash: str, user_id: str, family_id: str, expires_at: dt.datetime) -> None:
        """Store a refresh token's hash in its family."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                insert(refresh_tokens).values(
                    id=token_hash, user_id=user_id, family_id=family_id, expires_at=expires_at, created_at=utcnow()
                )
            )

    async def use_refresh_token(self, token_hash: str) -> tuple[str, str, str] | None:
        """Mark a refresh token used; return (status, user_id, family_id).

        status is ``ok``, ``reused`` (already used or revoked: the family is then revoked), or ``expired``.
        """
        now = utcnow()
        async with self.sessions() as session, session.begin():
            row = (await session.execute(select(refresh_tokens).where(refresh_tokens.c.id == token_hash))).first()
            if row is None:
                return None
            m = row._mapping
            if m["used_at"] is not None or m["revoked_at"] is not None:
                await self._revoke(session, m["family_id"], m["user_id"], "refresh_token_reused", now)
                return "reused", m["user_id"], m["family_id"]
            if as_utc(m["expires_at"]) <= now:
                return "expired", m["user_id"], m["family_id"]
            await session.execute(update(refresh_tokens).where(refresh_tokens.c.id == token_hash).values(used_at=now))
            return "ok", m["user_id"], m["family_id"]

    async def revoke_family(self, family_id: str, user_id: str = "", reason: str = "logout") -> None:
        """Revoke every token of a login session (logout), and tell every gateway replica."""
        async with self.sessions() as session, session.begin():
            await self._revoke(session, family_id, user_id, reason, utcnow())

    async def _revoke(self, session: AsyncSession, family_id: str, user_id: str, reason: str, now: dt.datetime) -> None:
        await session.execute(
            update(refresh_tokens)
            .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        if self.outbox is not None:
            # Same transaction as the revocation: every replica drops the session's access tokens
            # (crm_gateway.revocations), even if this process dies right after the commit.
            await self.outbox.add(
                session,
                SESSION_REVOKED,
                events_pb2.SessionRevoked(session_id=family_id, user_id=user_id, reason=reason),
                subject_id=family_id,
                actor=user_id or "system",
            )

    async def revoked_sessions_since(self, since: float) -> list[tuple[str, float]]:
        """``(session id, revoked at)`` of the sessions revoked after ``since`` (a Unix time)."""
        cutoff = dt.datetime.fromtimestamp(since, dt.UTC)
        query = (
            select(refresh_tokens.c.family_id, func.max(refresh_tokens.c.revoked_at))
            .where(refresh_tokens.c.revoked_at > cutoff)
            .group_by(refresh_tokens.c.family_id)
        )
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        return [(family_id, as_utc(revoked_at).timestamp()) for family_id, revoked_at in rows]
