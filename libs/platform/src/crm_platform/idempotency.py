"""Idempotent creation by the caller's own request id (``Idempotency-Key`` at the gateway).

A retry answers what the first call stored instead of creating twice; two identical calls racing each
other meet the unique ``(caller, request_id)`` constraint, and the loser answers with the winner's result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_platform.errors import AlreadyExists

T = TypeVar("T")


async def create_once(
    sessions: async_sessionmaker[AsyncSession],
    request_id: str,
    *,
    earlier: Callable[[AsyncSession], Awaitable[T | None]],
    write: Callable[[AsyncSession], Awaitable[T]],
    guard: Callable[[AsyncSession], Awaitable[None]] | None = None,
) -> T:
    """In one transaction: ``guard`` (e.g. the scope check), then ``earlier`` (the result of a previous call
    with this request id, if any), else ``write``. Without a request id every call writes."""
    try:
        async with sessions() as session, session.begin():
            if guard is not None:
                await guard(session)
            if request_id:
                found = await earlier(session)
                if found is not None:
                    return found
            return await write(session)
    except IntegrityError:
        if not request_id:
            raise
        async with sessions() as session:
            found = await earlier(session)
        if found is None:
            # The first call's record is no longer visible to this caller (e.g. its customer left the scope):
            # the key is spent, not reusable.
            raise AlreadyExists(f"request {request_id} was already used", reason="REQUEST_ID_REUSED") from None
        return found
