"""The one-statement create on PostgreSQL (``store/fastwrite.py``) writes what the SQLAlchemy path writes and
answers duplicates, replays and races as it does; on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from import_files import RM1, good_row, resident_id, to_csv
from sqlalchemy import select, text, update

from crm_customer import events
from crm_customer.config import DEV_MASTER_KEYS
from crm_customer.domain import Customer, register_customer
from crm_customer.store import CustomerStore
from crm_customer.store.fastwrite import CustomerWrites
from crm_customer.store.tables import customer_history, customer_keys, customers
from crm_platform.auth_context import Scope
from crm_platform.db import create_engine, normalise_url, session_factory
from crm_platform.errors import AlreadyExists
from crm_platform.fastread import ReadPool, asyncpg_dsn
from crm_platform.idempotency import IdempotencyKeyReused
from crm_platform.identifiers import resident_id_check_char
from crm_platform.migrations import migrate
from crm_platform.outbox import Outbox, PendingEvent, utcnow
from crm_platform.pii import Keyring
from crm_platform.schema import outbox as outbox_table
from crm_testing.services import identity

pytestmark = pytest.mark.postgres

_RM1 = identity("rm1")
_RM3 = identity("rm3", team_id="T2")
_HEAD2 = identity("head2", roles=("branch_head",), scope=Scope.BRANCH, team_id="", branch_id="SH001", region="east")


def _resident_id(sequence: int) -> str:
    body = f"11010519900101{sequence:03d}"
    return body + resident_id_check_char(body)


def _profile(sequence: int, **overrides: str) -> dict[str, str]:
    return {
        "name": "李明",
        "id_type": "resident_id",
        "id_number": _resident_id(sequence),
        "mobile": f"1380013{sequence:04d}",
        "gender": "male",
        "birth_date": "1990-01-01",
        "email": "li.ming@example.com",
        "address": "北京市朝阳区建国路 1 号",
        **overrides,
    }


class _Handed:
    """What the outbox handed to the relay after a commit."""

    def __init__(self) -> None:
        self.events: list[PendingEvent] = []

    def __call__(self, committed: Any) -> None:
        self.events.extend(committed)


@pytest.fixture
async def parts(postgres_url: str) -> AsyncIterator[tuple[CustomerStore, CustomerWrites, _Handed]]:
    engine = create_engine(normalise_url(postgres_url))
    await migrate(engine, "crm_customer")
    handed = _Handed()
    store = CustomerStore(
        session_factory(engine), Outbox("customer", handed), Keyring.from_spec(DEV_MASTER_KEYS, "dev")
    )
    dsn = asyncpg_dsn(engine.url)
    assert dsn is not None
    pool = ReadPool(dsn, size=3)
    await pool.open()
    try:
        yield store, CustomerWrites(store, pool), handed
    finally:
        await pool.close()
        await engine.dispose()


async def _rows(store: CustomerStore, customer_id: str) -> dict[str, Any]:
    async with store._sessions() as session:
        customer = (await session.execute(select(customers).where(customers.c.id == customer_id))).one()._asdict()
        key = (await session.execute(select(customer_keys).where(customer_keys.c.customer_id == customer_id))).one()
        history = (
            await session.execute(select(customer_history).where(customer_history.c.customer_id == customer_id))
        ).all()
        outbox = (await session.execute(select(outbox_table))).all()
    return {"customer": customer, "key": key._asdict(), "history": [h._asdict() for h in history], "outbox": outbox}


def _new(sequence: int, **overrides: str) -> Customer:
    return register_customer(_RM1, "individual", _profile(sequence, **overrides), utcnow())


async def test_one_statement_writes_what_the_session_path_writes(parts: Any) -> None:
    store, writes, handed = parts
    slow = await store.create(_RM1, _new(1), "request-slow")
    fast = await writes.create(_RM1, _new(2), "request-fast")
    a, b = await _rows(store, slow.id), await _rows(store, fast.id)
    differ = {"id", "customer_no", "request_id", "created_at", "updated_at"}
    differ |= {n for n in a["customer"] if n.endswith(("_enc", "_hash"))}  # other values, other data keys
    for name in a["customer"]:
        if name not in differ:
            assert a["customer"][name] == b["customer"][name], name
    assert b["customer"]["request_id"] == "request-fast"
    assert b["key"]["kid"] == a["key"]["kid"] and b["key"]["wrapped"] != a["key"]["wrapped"]
    assert [(h["action"], h["actor"]) for h in b["history"]] == [("created", "rm1")]
    fields = [[c["field"] for c in json.loads(x["history"][0]["changes"])] for x in (a, b)]
    assert fields[0] == fields[1] and "id_number" in fields[1]
    assert _resident_id(2) not in b["history"][0]["changes"]  # masked, as on the session path
    assert (await store.get(_RM1, fast.id)).profile == fast.profile  # decrypts under its own key
    # Both events are in the outbox table and were handed to the relay; the fast one once.
    fast_events = [e for e in handed.events if e.subject == events.CUSTOMER_CREATED]
    assert len(fast_events) == 2 and len({e.id for e in fast_events}) == 2
    assert {row.id for row in b["outbox"]} == {e.id for e in fast_events}


async def test_duplicates_replays_and_scope_answer_as_the_session_path(parts: Any) -> None:
    store, writes, handed = parts
    first = await writes.create(_RM1, _new(3), "request-1")
    assert await writes.create(_RM1, _new(3), "request-1") == first  # a replay answers the earlier customer
    with pytest.raises(AlreadyExists) as same_id:
        await writes.create(_RM1, _new(3, mobile="13900000001"), "")
    assert same_id.value.existing_id == first.id and same_id.value.reason == "DUPLICATE_ID_NUMBER"
    with pytest.raises(AlreadyExists) as same_mobile:
        await writes.create(_RM1, _new(4, mobile=_profile(3)["mobile"]), "")
    assert same_mobile.value.existing_id == first.id and same_mobile.value.reason == "DUPLICATE_MOBILE"
    other_branch = register_customer(_HEAD2, "individual", _profile(3, mobile="13900000002"), utcnow())
    with pytest.raises(AlreadyExists) as hidden:
        await writes.create(_HEAD2, other_branch, "")
    assert hidden.value.existing_id == ""  # out of scope: no existence leak beyond "already exists"
    # Nothing of the refused creates was written or handed over.
    async with store._sessions() as session:
        assert (await session.execute(select(customers.c.id))).scalars().all() == [first.id]
        assert len((await session.execute(select(customer_keys.c.customer_id))).all()) == 1
        assert len((await session.execute(select(outbox_table.c.id))).all()) == 1
    assert len(handed.events) == 1


async def test_an_erased_customer_no_longer_counts_as_a_duplicate(parts: Any) -> None:
    store, writes, _ = parts
    first = await writes.create(_RM1, _new(5), "")
    async with store._sessions() as session, session.begin():
        await session.execute(update(customers).where(customers.c.id == first.id).values(erased_at=utcnow()))
    again = await writes.create(_RM1, _new(5), "")
    assert again.id != first.id


async def test_concurrent_creates_of_one_person_make_one_customer(parts: Any) -> None:
    store, writes, handed = parts
    attempts = [register_customer(_RM3, "individual", _profile(6), utcnow()) for _ in range(8)]
    results = await asyncio.gather(*(writes.create(_RM3, c, "") for c in attempts), return_exceptions=True)
    created = [r for r in results if isinstance(r, Customer)]
    refused = [r for r in results if isinstance(r, AlreadyExists)]
    assert len(created) == 1 and len(refused) == 7, results
    assert {r.existing_id for r in refused} == {created[0].id}
    async with store._sessions() as session:
        assert len((await session.execute(select(customers.c.id))).all()) == 1
    assert len(handed.events) == 1


async def test_a_value_too_long_for_its_column_fails_instead_of_being_cut(parts: Any) -> None:
    store, writes, _ = parts
    customer = _new(7)
    too_long = dataclasses.replace(customer, branch_id="B" * 65)
    with pytest.raises(Exception, match="too long"):
        await writes.create(_RM1, too_long, "")
    async with store._sessions() as session:
        assert (await session.execute(select(customers.c.id))).all() == []


@pytest.mark.parametrize("path", ["statement", "session"])
async def test_a_customer_number_already_taken_gets_a_fresh_one(parts: Any, path: str) -> None:
    store, writes, _ = parts
    if path == "session":
        writes = CustomerWrites(store, None)
    first = await writes.create(_RM1, _new(8), "")
    clash = dataclasses.replace(_new(9), customer_no=first.customer_no)
    second = await writes.create(_RM1, clash, "")
    assert second.customer_no != first.customer_no
    assert (await store.get(_RM1, second.id)).customer_no == second.customer_no


async def test_an_imports_customer_numbers_avoid_the_table_and_the_batch_in_flight(
    parts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm_customer.store import imports as import_store

    store, writes, _ = parts
    taken = (await writes.create(_RM1, _new(10), "")).customer_no
    # The random draws: first the number in the table, one the batch in flight gives, and a free one; then more.
    draws = iter([[taken, "C00000000000001", "C00000000000002"], ["C00000000000003", "C00000000000004"]])
    monkeypatch.setattr(import_store, "new_customer_numbers", lambda _now, count: next(draws)[:count])
    imports = import_store.ImportStore(store._sessions.kw["bind"], store._sessions, store._outbox, store)
    async with store._sessions() as session:
        numbers = await imports._customer_numbers(session, utcnow(), 3, frozenset({"C00000000000001"}))
    assert sorted(numbers) == ["C00000000000002", "C00000000000003", "C00000000000004"]


async def test_a_large_import_refreshes_the_statistics_once_finished(parts: Any) -> None:
    import types

    from crm_customer.store import imports as import_store

    store, _, _ = parts
    imports = import_store.ImportStore(store._sessions.kw["bind"], store._sessions, store._outbox, store)

    async def analysed() -> bool:
        async with store._sessions() as session:
            query = text("SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'customers'")
            return bool((await session.execute(query)).scalar_one())

    small = types.SimpleNamespace(id="j1", dry_run=False, imported=import_store.ANALYZE_AFTER_ROWS - 1)
    dry = types.SimpleNamespace(id="j2", dry_run=True, imported=import_store.ANALYZE_AFTER_ROWS)
    for job in (small, dry):
        await imports.refresh_statistics(job)  # type: ignore[arg-type]
    assert not await analysed()
    large = types.SimpleNamespace(id="j3", dry_run=False, imported=import_store.ANALYZE_AFTER_ROWS)
    await imports.refresh_statistics(large)  # type: ignore[arg-type]
    for _ in range(50):  # the statistics collector reports with a short delay
        if await analysed():
            break
        await asyncio.sleep(0.1)
    assert await analysed()


async def _queued_import(store: CustomerStore) -> tuple[Any, str, bytes, str]:
    """An import store on ``store``'s database, and a job it queued for a valid file of 20 customers uploaded by
    rm1: (import store, job id, the file, its SHA-256)."""
    from crm_customer.domain.imports import Distribution, ImportFormat, inspect, plan_distribution
    from crm_customer.store import imports as import_store

    imports = import_store.ImportStore(store._sessions.kw["bind"], store._sessions, store._outbox, store)
    content = to_csv([good_row(i) for i in range(20)])
    plan = plan_distribution(RM1, Distribution.NONE, "", [])
    upload = await imports.begin_upload(RM1, ImportFormat.CSV, "customers.csv", False, plan, utcnow())
    await upload.write(content)
    sha256 = await upload.close()
    facts = await inspect(imports.file(upload.job_id), ImportFormat.CSV)
    await imports.queue(upload.job_id, sha256, len(content), facts, utcnow())
    return imports, upload.job_id, content, sha256


async def test_an_import_whose_file_fails_to_read_stops_with_the_reason_after_its_good_batches(parts: Any) -> None:
    """The worker reads and prepares batches ahead of the one it writes; a read failure further on reaches the job
    after the batches before it were written, as that failure, instead of leaving the worker waiting."""
    import hashlib

    from crm_customer.domain.imports import Undecodable
    from crm_customer.import_worker import ImportWorker
    from crm_customer.store import imports as import_store

    store, _, _ = parts
    imports, job_id, content, sha256 = await _queued_import(store)
    # The stored file goes on with bytes that are not UTF-8 (as if its storage broke after the upload's check).
    async with store._sessions() as session, session.begin():
        await session.execute(
            import_store.chunks.insert().values(job_id=job_id, seq=2, data=b"\xff\xfe" + "张".encode("gb18030"))
        )
    assert hashlib.sha256(content).hexdigest() == sha256

    with pytest.raises(Undecodable, match=f"not utf-8 at byte {len(content)}"):
        await asyncio.wait_for(ImportWorker(imports, batch_rows=5).process(job_id), timeout=60)
    job = await imports.load(job_id)
    assert job is not None
    assert (job.status, job.checkpoint_row, job.processed, job.imported) == (import_store.RUNNING, 21, 20, 20)
    async with store._sessions() as session:
        assert (await session.execute(select(text("count(*)")).select_from(customers))).scalar_one() == 20


async def test_a_single_create_racing_an_import_batch_makes_that_row_a_duplicate(parts: Any) -> None:
    """A batch is decided (duplicates, numbers) before it is written, while the batch before it is written. A single
    create that takes one of its ID numbers in between makes its write fail on the unique index; the worker decides
    that batch again — the row is now a duplicate of the new customer — and the batch after it too, since it was
    decided on what the failed one would have written."""
    from crm_customer.import_worker import ImportWorker

    store, writes, _ = parts
    imports, job_id, _, _ = await _queued_import(store)

    # Index 7 is the file's row 9, in the second batch of five rows.
    rival = register_customer(
        RM1,
        "individual",
        {"name": "抢先", "id_type": "resident_id", "id_number": resident_id(7), "mobile": "13700000007"},
        utcnow(),
    )
    write_batch = imports.write_batch
    raced: list[str] = []

    async def racing_write(job: Any, decided: Any) -> Any:
        if not raced and job.checkpoint_row == 6:  # the second batch, decided already, about to be written
            raced.append((await writes.create(RM1, rival, "")).id)
        return await write_batch(job, decided)

    imports.write_batch = racing_write  # type: ignore[method-assign]
    job = await asyncio.wait_for(ImportWorker(imports, batch_rows=5).process(job_id), timeout=60)
    assert job is not None and raced
    assert (job.status, job.processed, job.imported, job.duplicates, job.failed) == ("finished", 20, 19, 1, 0)
    rows = {row.row: row for row in (await imports.rows(RM1, job_id, 0, 100, ""))[0]}
    assert (rows[9].status, rows[9].duplicate_of) == ("duplicate", raced[0])
    assert all(rows[r].status == "imported" for r in rows if r != 9)
    async with store._sessions() as session:
        assert (await session.execute(select(text("count(*)")).select_from(customers))).scalar_one() == 20
        hashes = select(text("count(DISTINCT id_number_hash)")).select_from(customers)
        assert (await session.execute(hashes)).scalar_one() == 20


@pytest.mark.parametrize("path", ["statement", "session"])
async def test_a_request_id_binds_to_its_request_even_in_a_race(parts: Any, path: str) -> None:
    store, writes, handed = parts
    if path == "session":
        writes = CustomerWrites(store, None)
    first = await writes.create(_RM1, _new(11), "request-f", "fp-a")
    assert (await writes.create(_RM1, _new(11), "request-f", "fp-a")).id == first.id
    with pytest.raises(IdempotencyKeyReused):
        await writes.create(_RM1, _new(12), "request-f", "fp-b")  # another person under the same key
    with pytest.raises(IdempotencyKeyReused):
        await writes.create(_RM1, _new(11), "request-f", "fp-b")  # the same person, yet another request

    # Two calls with one key and different requests at once: one customer, the other call refused.
    racing = [(_new(13), "fp-13"), (_new(14), "fp-14")]
    results = await asyncio.gather(
        *(writes.create(_RM1, c, "request-race", fp) for c, fp in racing), return_exceptions=True
    )
    created = [r for r in results if isinstance(r, Customer)]
    assert len(created) == 1 and sum(isinstance(r, IdempotencyKeyReused) for r in results) == 1, results
    async with store._sessions() as session:
        rows = (await session.execute(select(customers.c.id, customers.c.request_fingerprint))).all()
    assert sorted(r.id for r in rows) == sorted([first.id, created[0].id])
    fingerprints = {r.id: r.request_fingerprint for r in rows}
    assert fingerprints[first.id] == "fp-a" and fingerprints[created[0].id] in ("fp-13", "fp-14")
    assert len(handed.events) == 2  # the refused calls wrote no event either


async def test_a_customer_stored_before_fingerprints_answers_any_retry(parts: Any) -> None:
    store, writes, _ = parts
    first = await writes.create(_RM1, _new(15), "request-old", "fp-a")
    async with store._sessions() as session, session.begin():
        await session.execute(update(customers).where(customers.c.id == first.id).values(request_fingerprint=None))
    assert (await writes.create(_RM1, _new(16), "request-old", "fp-b")).id == first.id
