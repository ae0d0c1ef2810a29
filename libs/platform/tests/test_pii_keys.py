"""Per-customer data keys in a service other than customer (SQLite and PostgreSQL): a text sealed with the
customer's key opens only with it, a key per customer, shredding makes the texts unreadable, and texts stored in
the clear before are sealed once by the start-up backfill."""

from __future__ import annotations

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Column, LargeBinary, MetaData, String, Table, insert, select

from crm_platform.config import DEV_MASTER_KEYS
from crm_platform.db import create_engine, normalise_url, session_factory
from crm_platform.pii import Keyring, PiiKeyError
from crm_platform.pii.keys import (
    CustomerKeys,
    SealedText,
    create_key_tables,
    customer_data_keys,
    seal_legacy_texts,
    shred,
)

KEYS = CustomerKeys(Keyring.from_spec(DEV_MASTER_KEYS, "dev"))
notes_metadata = MetaData()
notes = Table(
    "notes",
    notes_metadata,
    Column("id", String(36), primary_key=True),
    Column("customer_id", String(36), nullable=False),
    Column("text", String(200), nullable=False),
    Column("text_enc", LargeBinary, nullable=True),
)


async def test_seal_open_shred_and_the_legacy_backfill(db_url: str) -> None:
    engine = create_engine(normalise_url(db_url))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: create_key_tables(Operations(MigrationContext.configure(sync))))
            await conn.run_sync(notes_metadata.create_all)
        sessions = session_factory(engine)
        async with sessions() as session, session.begin():
            sealed = await KEYS.seal(session, "c1", "note.text", "想给女儿在国外买房")
            other = await KEYS.seal(session, "c2", "note.text", "想给女儿在国外买房")
            assert b"\xe4\xb9\xb0\xe6\x88\xbf" not in sealed  # "买房" in UTF-8: not in the ciphertext
            assert await KEYS.open(session, "c1", "note.text", sealed) == "想给女儿在国外买房"
            # Bound to the customer and the field: another customer's key, or another field, does not open it.
            with pytest.raises(PiiKeyError):
                await KEYS.open(session, "c2", "note.text", sealed)
            with pytest.raises(PiiKeyError):
                await KEYS.open(session, "c1", "note.other", sealed)
            assert await KEYS.open_many(
                session, [("c1", "note.text", sealed), ("c2", "note.text", other), ("c3", "note.text", None)]
            ) == ["想给女儿在国外买房", "想给女儿在国外买房", None]
            assert len((await session.execute(select(customer_data_keys))).all()) == 2  # one key per customer

            await session.execute(
                insert(notes),
                [
                    {"id": f"n{i}", "customer_id": f"c{i % 3}", "text": f"旧记录 {i}", "text_enc": None}
                    for i in range(7)
                ],
            )
        text = SealedText(notes.c.customer_id, notes.c.text_enc, "note.text", notes.c.id, plain=notes.c.text)
        async with sessions() as session:  # before: read from the plain column
            legacy = (await session.execute(select(notes).order_by(notes.c.id))).all()
            assert await KEYS.open_rows(session, text, legacy) == [f"旧记录 {i}" for i in range(7)]
        assert await seal_legacy_texts(sessions, KEYS, text, batch=3) == 7
        assert await seal_legacy_texts(sessions, KEYS, text) == 0  # idempotent
        async with sessions() as session, session.begin():
            rows = (await session.execute(select(notes).order_by(notes.c.id))).all()
            assert {r.text for r in rows} == {""}
            assert await KEYS.open_rows(session, text, rows) == [f"旧记录 {i}" for i in range(7)]
            # An erased customer's key is destroyed: its texts no longer open, the others still do.
            await shred(session, "c1")
            opened = await KEYS.open_many(session, [(r.customer_id, "note.text", r.text_enc) for r in rows])
            assert [text is None for text in opened] == [r.customer_id == "c1" for r in rows]
            assert await KEYS.open(session, "c1", "note.text", sealed) is None
    finally:
        await engine.dispose()
