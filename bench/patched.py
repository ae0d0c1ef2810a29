"""Local patched copies of platform methods, used only to measure proposed fixes (libs/ is untouched).

``OutboxRelay._publish`` (libs/platform/src/crm_platform/outbox.py) calls
``js.publish_async(..., wait_stall=5.0)`` for every row. nats-py implements ``wait_stall`` as
``asyncio.wait_for(semaphore.acquire(), timeout=wait_stall)``; on Python 3.11 ``wait_for`` with a timeout
wraps the acquire in a new Task and a timer, so every single publish yields to the event loop at least
once. The loop then runs an ``epoll`` pass and nats-py's flusher per message, writing one small frame per
syscall instead of one buffer per batch. Without ``wait_stall`` an uncontended acquire returns without
yielding. The patch keeps the bound on a stalled broker by putting the whole batch — the publishes *and*
the acks — under a single ``asyncio.timeout(publish_timeout)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite

from crm_platform.inbox import ConsumerRunner, Event, Subscription
from crm_platform.outbox import OutboxRelay, utcnow
from crm_platform.schema import inbox as inbox_table


class PatchedOutboxRelay(OutboxRelay):
    """:class:`OutboxRelay` with the proposed ``_publish``: one deadline per batch, no per-message stall timer."""

    async def _publish(self, rows: Sequence[Any]) -> None:
        js = self._bus.js
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self._publish_timeout):
                for row in rows:
                    headers = {"Nats-Msg-Id": row.id, "Crm-Event-Type": row.subject}
                    futures.append(await js.publish_async(row.subject, row.envelope, headers=headers))
                await asyncio.gather(*futures)
        except BaseException:
            for future in futures:
                future.cancel()
            raise


class PatchedConsumerRunner(ConsumerRunner):
    """:class:`ConsumerRunner` with the proposed ``_apply``: the inbox check and record in one statement.

    The shipped ``_apply`` (libs/platform/src/crm_platform/inbox.py) runs ``SELECT`` on the inbox and then
    ``INSERT`` — two round trips — and catches ``IntegrityError`` for the race between them.
    ``INSERT … ON CONFLICT DO NOTHING`` (PostgreSQL and SQLite alike) does both in one round trip and has
    no race: a row count of 0 means another delivery already recorded the event.
    """

    async def _apply(self, sub: Subscription, event: Event) -> str:
        handler = sub.handlers.get(event.type)
        async with self._sessions() as session, session.begin():
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            statement = (
                insert(inbox_table)
                .values(consumer=sub.durable, event_id=event.id, outcome="handled", handled_at=utcnow())
                .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
            )
            result = await session.execute(statement)
            if result.rowcount == 0:  # type: ignore[attr-defined]
                return "duplicate"
            if handler is not None:
                await handler(session, event)
        return "handled" if handler is not None else "ignored"
