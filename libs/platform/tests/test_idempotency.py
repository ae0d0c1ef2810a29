"""Request ids bound to their request (``crm_platform.idempotency``) on a real SQLite and PostgreSQL table."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Column, MetaData, String, Table, UniqueConstraint, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm.customer.v1 import customer_pb2, customer_service_pb2
from crm.interaction.v1 import interaction_service_pb2
from crm_platform.db import create_engine, normalise_url, session_factory
from crm_platform.errors import InvalidArgument
from crm_platform.idempotency import IdempotencyKeyReused, create_once, fingerprint
from crm_platform.ids import new_id

_metadata = MetaData()
_notes = Table(
    "idempotent_notes",
    _metadata,
    Column("id", String(36), primary_key=True),
    Column("text", String(100), nullable=False),
    Column("request_id", String(64), nullable=True),
    Column("request_fingerprint", String(64), nullable=True),
    UniqueConstraint("request_id", name="uq_idempotent_notes_request"),
)


def _request(name: str, request_id: str = "key-1") -> customer_service_pb2.CreateCustomerRequest:
    message = customer_service_pb2.CreateCustomerRequest(
        kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL, name=name, request_id=request_id
    )
    message.profile.mobile = "13800138000"
    return message


def test_the_fingerprint_is_the_request_without_its_id() -> None:
    first = _request("李明", "key-1")
    assert fingerprint(first) == fingerprint(_request("李明", "key-2"))  # the key itself is not part of it
    assert fingerprint(first) != fingerprint(_request("李明 ", "key-1"))
    other = _request("李明")
    other.profile.mobile = "13800138001"
    assert fingerprint(first) != fingerprint(other)
    assert len(fingerprint(first)) == 64 and first.request_id == "key-1"  # the caller's message is untouched
    # Without a request id nothing is compared, so nothing is hashed.
    assert fingerprint(_request("李明", "")) == ""
    # Another message type with the same field values is another request.
    logged = interaction_service_pb2.LogInteractionRequest(customer_id="c1", summary="来电", request_id="key-1")
    assert fingerprint(logged) != fingerprint(logged.__class__(customer_id="c1", summary="来访", request_id="key-1"))


def test_a_reused_key_is_an_invalid_argument_with_its_own_reason() -> None:
    error = IdempotencyKeyReused()
    assert isinstance(error, InvalidArgument) and error.reason == "IDEMPOTENCY_KEY_REUSED"
    assert "another request" in error.message


@dataclass
class _Notes:
    sessions: async_sessionmaker[AsyncSession]

    async def create(self, text: str, request_id: str, *, hide_first_look: bool = False) -> str:
        """Create a note idempotently; ``hide_first_look`` makes the first look-up miss, as a snapshot taken
        before a racing call committed would, so the write meets the unique constraint."""
        message = _request(text, request_id)
        looks = 0

        async def earlier(session: AsyncSession) -> tuple[str, str | None] | None:
            nonlocal looks
            looks += 1
            if hide_first_look and looks == 1:
                return None
            c = _notes.c
            row = (await session.execute(select(c.id, c.request_fingerprint).where(c.request_id == request_id))).first()
            return (row.id, row.request_fingerprint) if row is not None else None

        async def write(session: AsyncSession) -> str:
            note_id = new_id()
            await session.execute(
                insert(_notes).values(
                    id=note_id, text=text, request_id=request_id or None, request_fingerprint=fingerprint(message)
                )
            )
            return note_id

        return await create_once(
            self.sessions, request_id, earlier=earlier, write=write, fingerprint=fingerprint(message)
        )

    async def count(self) -> int:
        async with self.sessions() as session:
            return len((await session.execute(select(_notes.c.id))).all())


@pytest.fixture
async def notes(db_url: str) -> AsyncIterator[_Notes]:
    engine = create_engine(normalise_url(db_url))
    async with engine.begin() as conn:
        await conn.run_sync(_metadata.create_all)
    yield _Notes(session_factory(engine))
    await engine.dispose()


async def test_the_same_key_answers_the_same_request_and_refuses_another(notes: _Notes) -> None:
    first = await notes.create("a", "key-1")
    assert await notes.create("a", "key-1") == first
    with pytest.raises(IdempotencyKeyReused):
        await notes.create("b", "key-1")
    assert await notes.create("b", "key-2") != first  # another key is another request
    assert await notes.create("b", "") != await notes.create("b", "")  # without a key every call writes
    assert await notes.count() == 4


async def test_the_loser_of_a_race_with_another_request_is_refused(notes: _Notes) -> None:
    # Deterministic: the loser's look-up misses (its snapshot predates the winner), its insert meets the constraint.
    first = await notes.create("a", "key-1")
    with pytest.raises(IdempotencyKeyReused):
        await notes.create("b", "key-1", hide_first_look=True)
    # The same request losing the same race answers the winner's record.
    assert await notes.create("a", "key-1", hide_first_look=True) == first
    assert await notes.count() == 1


async def test_concurrent_calls_with_one_key_and_two_requests_store_one(notes: _Notes) -> None:
    results = await asyncio.gather(
        *(notes.create(text, "key-1") for text in ("a", "b", "a", "b")), return_exceptions=True
    )
    stored = {r for r in results if isinstance(r, str)}
    refused = [r for r in results if isinstance(r, IdempotencyKeyReused)]
    assert len(stored) == 1 and len(refused) == 2, results
    assert await notes.count() == 1


async def test_a_row_without_a_fingerprint_answers_any_retry(notes: _Notes) -> None:
    # Written before the fingerprint column existed (NULL): answered as before, whatever the retry carries.
    async with notes.sessions() as session, session.begin():
        await session.execute(insert(_notes).values(id="old", text="a", request_id="key-old"))
    assert await notes.create("b", "key-old") == "old"
    assert await notes.count() == 1
