"""Per-customer data keys in a service other than customer, for the personal free text it keeps (interaction
summaries, ticket descriptions, prospects' names and mobiles, message bodies in delivery logs).

The scheme is the customer service's (:mod:`crm_platform.pii`): each customer has a random data key *in this
service* (a key per customer per service), stored wrapped by a master key; a text is sealed with AES-GCM bound
to the customer and the field. ``customer.erased`` destroys the service's key of that customer
(:func:`shred_on_erasure`), so every copy of those texts — replicas, backups, exports — becomes unreadable while
the records' other facts stay.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, DateTime, LargeBinary, MetaData, String, Table, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_platform.pii import Keyring, PiiKeyError, WrappedKey

log = logging.getLogger(__name__)

keys_metadata = MetaData()

customer_data_keys = Table(
    "customer_data_keys",
    keys_metadata,
    Column("customer_id", String(36), primary_key=True),
    Column("kid", String(40), nullable=False, comment="id of the master key that wraps it"),
    Column("wrapped", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def create_key_tables(op: Any) -> None:
    """Create the data-key table in a service's migration (``op`` is ``alembic.op``)."""
    keys_metadata.create_all(op.get_bind())


def drop_key_tables(op: Any) -> None:
    """Drop it (the downgrade)."""
    keys_metadata.drop_all(op.get_bind())


SHREDDED = None
"""What :meth:`CustomerKeys.open` answers for a text whose customer was erased (its key destroyed)."""


@dataclass(frozen=True)
class SealedText:
    """A table's column of personal text sealed with the record's customer's data key: where the ciphertext is,
    the field name bound into it, the record's customer and key columns, and — for a table that held the text in
    the clear before it sealed it — that plain column (read while a row is not sealed yet, cleared once it is)."""

    customer_id: Column[str]
    sealed: Column[bytes]
    field: str
    record_id: Column[str]
    plain: Column[str] | None = None


class CustomerKeys:
    """Seals and opens a customer's personal texts with the customer's data key in this service."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring

    async def _data_key(self, session: AsyncSession, customer_id: str, *, create: bool) -> bytes | None:
        c = customer_data_keys.c
        row = (await session.execute(select(c.kid, c.wrapped).where(c.customer_id == customer_id))).first()
        if row is not None:
            return self._keyring.unwrap(customer_id, WrappedKey(row.kid, row.wrapped))
        if not create:
            return None
        _data_key, wrapped = self._keyring.new_data_key(customer_id)
        dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        stmt = insert(customer_data_keys).values(
            customer_id=customer_id, kid=wrapped.kid, wrapped=wrapped.wrapped, created_at=dt.datetime.now(dt.UTC)
        )
        await session.execute(stmt.on_conflict_do_nothing(index_elements=["customer_id"]))
        # Another transaction may have made the key first: use whichever is stored.
        return await self._data_key(session, customer_id, create=False)

    async def seal(self, session: AsyncSession, customer_id: str, field: str, text: str) -> bytes:
        """``text`` encrypted with the customer's key (made on first use), bound to the customer and ``field``."""
        data_key = await self._data_key(session, customer_id, create=True)
        assert data_key is not None
        return Keyring.encrypt(data_key, customer_id, field, text)

    async def open(self, session: AsyncSession, customer_id: str, field: str, blob: bytes | None) -> str | None:
        """The text of ``blob``; None when the customer was erased (key shredded) or there is no text."""
        if blob is None:
            return None
        data_key = await self._data_key(session, customer_id, create=False)
        if data_key is None:
            return SHREDDED
        return Keyring.decrypt(data_key, customer_id, field, blob)

    async def open_rows(self, session: AsyncSession, text: SealedText, rows: Sequence[Any]) -> list[str | None]:
        """The texts of ``rows`` (each with the ``text`` columns selected), a row not sealed yet read from its
        plain column; None for an erased customer's."""
        opened = await self.open_many(
            session, [(row._mapping[text.customer_id.name], text.field, row._mapping[text.sealed.name]) for row in rows]
        )
        if text.plain is None:
            return opened
        plain = text.plain.name
        return [
            value if row._mapping[text.sealed.name] is not None else row._mapping[plain]
            for row, value in zip(rows, opened, strict=True)
        ]

    async def open_many(self, session: AsyncSession, items: list[tuple[str, str, bytes | None]]) -> list[str | None]:
        """:meth:`open` for ``(customer_id, field, blob)`` items, each customer's key read once."""
        c = customer_data_keys.c
        ids = sorted({customer_id for customer_id, _, _ in items})
        keys: dict[str, bytes] = {}
        if ids:
            rows = (await session.execute(select(c.customer_id, c.kid, c.wrapped).where(c.customer_id.in_(ids)))).all()
            keys = {r.customer_id: self._keyring.unwrap(r.customer_id, WrappedKey(r.kid, r.wrapped)) for r in rows}
        out: list[str | None] = []
        for customer_id, field, blob in items:
            key = keys.get(customer_id)
            out.append(None if blob is None or key is None else Keyring.decrypt(key, customer_id, field, blob))
        return out


async def shred(session: AsyncSession, customer_id: str) -> None:
    """Destroy the service's data key of ``customer_id`` (crypto-shredding; applying it again changes nothing)."""
    await session.execute(delete(customer_data_keys).where(customer_data_keys.c.customer_id == customer_id))


async def seal_legacy_texts(
    sessions: async_sessionmaker[AsyncSession], keys: CustomerKeys, text: SealedText, *, batch: int = 500
) -> int:
    """Seal the texts a table held in the clear before it sealed them (rows with ``text.plain`` set and nothing
    sealed), a batch per transaction, clearing the plain column; return how many. Run at start-up: idempotent, a
    crash between batches leaves only whole batches done; a failure is logged and the next start carries on."""
    try:
        return await _seal_legacy_batches(sessions, keys, text, batch)
    except Exception as exc:  # noqa: BLE001 - a background chore: the service serves on, the next start retries
        log.warning(
            "sealing texts stored in the clear failed", extra={"error": type(exc).__name__, "field": text.field}
        )
        return 0


async def _seal_legacy_batches(
    sessions: async_sessionmaker[AsyncSession], keys: CustomerKeys, text: SealedText, batch: int
) -> int:
    assert text.plain is not None, "only a table that held the text in the clear has anything to seal"
    plain, sealed = text.plain, text.sealed
    total = 0
    while True:
        async with sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(text.record_id, text.customer_id, plain)
                    .where(sealed.is_(None), plain != "")
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for rid, cid, value in rows:
                blob = await keys.seal(session, cid, text.field, value)
                await session.execute(
                    update(plain.table).where(text.record_id == rid).values({sealed.name: blob, plain.name: ""})
                )
        total += len(rows)
        if len(rows) < batch:
            return total


__all__ = [
    "SHREDDED",
    "CustomerKeys",
    "PiiKeyError",
    "SealedText",
    "create_key_tables",
    "customer_data_keys",
    "drop_key_tables",
    "shred",
]
