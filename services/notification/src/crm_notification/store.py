"""Inbox tables and queries. A user reads only their own inbox: every query is filtered by user id."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, insert, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_notification.domain import InboxMessage, InboxPage
from crm_notification.events import INBOX_CREATED, inbox_message_created
from crm_platform.db import as_utc
from crm_platform.outbox import Outbox

metadata = MetaData()

# Users' in-app messages; not to be confused with the platform's ``inbox`` table of handled event ids.
inbox_messages = Table(
    "inbox_messages",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(64), nullable=False),
    Column("kind", String(50), nullable=False),
    Column("title", String(200), nullable=False),
    Column("body", String(2000), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("read_at", DateTime(timezone=True), nullable=True),
    Index("ix_inbox_messages_user", "user_id", "id"),
)


def _to_message(row: Row[tuple[object, ...]]) -> InboxMessage:
    m = row._mapping
    return InboxMessage(
        id=m["id"],
        user_id=m["user_id"],
        kind=m["kind"],
        title=m["title"],
        body=m["body"],
        created_at=as_utc(m["created_at"]),
        read_at=as_utc(m["read_at"]) if m["read_at"] is not None else None,
    )


class InboxStore:
    """Reads inboxes; delivers messages with their ``inbox.created`` event in the caller's transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox) -> None:
        self._sessions = sessions
        self._outbox = outbox

    async def deliver(self, session: AsyncSession, message: InboxMessage, *, actor: str) -> None:
        """Put ``message`` in its user's inbox inside ``session``'s transaction (a consumer's, with its inbox row)."""
        await session.execute(
            insert(inbox_messages).values(
                id=message.id,
                user_id=message.user_id,
                kind=message.kind,
                title=message.title,
                body=message.body,
                created_at=message.created_at,
                read_at=message.read_at,
            )
        )
        await self._outbox.add(
            session, INBOX_CREATED, inbox_message_created(message), subject_id=message.id, actor=actor
        )

    async def page(self, page: InboxPage) -> tuple[list[InboxMessage], str]:
        """A page of one user's inbox, newest first (ids are time-ordered); returns the items and the next token."""
        c = inbox_messages.c
        query = select(inbox_messages).where(c.user_id == page.user_id)
        if page.unread_only:
            query = query.where(c.read_at.is_(None))
        if page.after_id:
            query = query.where(c.id < page.after_id)
        async with self._sessions() as session:
            rows = (await session.execute(query.order_by(c.id.desc()).limit(page.limit + 1))).all()
        items = [_to_message(r) for r in rows[: page.limit]]
        return items, (items[-1].id if len(rows) > page.limit else "")
