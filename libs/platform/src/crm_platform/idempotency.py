"""Idempotent creation by the caller's own request id (``Idempotency-Key`` at the gateway).

A retry answers what the first call stored instead of creating twice; two identical calls racing each
other meet the unique ``(caller, request_id)`` constraint, and the loser answers with the winner's result.

A request id binds to the request it first came with, as Stripe's idempotency keys do: the service stores a
:func:`fingerprint` of the request beside the id, and a later call with the same id but another request is
refused (:class:`IdempotencyKeyReused`, gRPC ``INVALID_ARGUMENT``, HTTP 422) instead of silently answering the
first record and dropping the second request. Rows stored before the fingerprint existed hold ``NULL`` and keep
answering any retry, as they did.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_platform.errors import AlreadyExists, InvalidArgument

T = TypeVar("T")

REQUEST_ID_FIELD = "request_id"


class IdempotencyKeyReused(InvalidArgument):
    """The request id (``Idempotency-Key``) was first used with another request: a client bug, not a retry."""

    reason = "IDEMPOTENCY_KEY_REUSED"

    def __init__(self) -> None:
        super().__init__([], "this idempotency key was already used with another request; use a new key")


def fingerprint(message: Any) -> str:
    """The SHA-256 (hex) of a create request's deterministic protobuf serialization with its ``request_id``
    cleared: what a retry must repeat exactly to be answered as the first call. "" without a request id (then
    nothing is compared, so nothing is hashed)."""
    if not getattr(message, REQUEST_ID_FIELD, ""):
        return ""
    # A copy, not a clear-and-restore of the caller's message: a few microseconds, and no side effect.
    unkeyed = type(message)()
    unkeyed.CopyFrom(message)
    unkeyed.ClearField(REQUEST_ID_FIELD)
    return hashlib.sha256(unkeyed.SerializeToString(deterministic=True)).hexdigest()


def same_request(record: T, stored: str | None, given: str) -> T:
    """``record`` (what the first call with this request id stored) when ``given`` — this call's fingerprint —
    matches the ``stored`` one; :class:`IdempotencyKeyReused` when it does not. A row stored before fingerprints
    (``NULL``) or a caller without one ("") compares nothing and answers the record, as before."""
    if stored and given and stored != given:
        raise IdempotencyKeyReused()
    return record


async def create_once(
    sessions: async_sessionmaker[AsyncSession],
    request_id: str,
    *,
    earlier: Callable[[AsyncSession], Awaitable[tuple[T, str | None] | None]],
    write: Callable[[AsyncSession], Awaitable[T]],
    guard: Callable[[AsyncSession], Awaitable[None]] | None = None,
    fingerprint: str = "",
) -> T:
    """In one transaction: ``guard`` (e.g. the scope check), then ``earlier`` (the record a previous call with
    this request id stored and that call's fingerprint, if any), else ``write`` (which stores ``fingerprint``
    beside the request id). Without a request id every call writes. An earlier record whose fingerprint differs
    from ``fingerprint`` raises :class:`IdempotencyKeyReused`, also when the two calls raced."""
    try:
        async with sessions() as session, session.begin():
            if guard is not None:
                await guard(session)
            if request_id:
                found = await earlier(session)
                if found is not None:
                    return same_request(*found, fingerprint)
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
        # The race's loser: one record stands, and a different request under the same key is told so.
        return same_request(*found, fingerprint)
