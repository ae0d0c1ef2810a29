"""The import's helper process: its row preparation has the same outcome as in the service's process, its
encryption reads with the service's keyring, its inspection of an XLSX file is the service's, a helper that dies
costs no batch and no file, and the service starts it with itself."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import signal
import uuid
from pathlib import Path

import pytest
from import_files import BAD_KINDS, good_row

from crm.customer.v1 import customer_pb2, events_pb2
from crm_customer import events
from crm_customer.domain import Customer, Profile, changes
from crm_customer.domain.import_bounds import ImportFileRejected, ImportLimits
from crm_customer.domain.imports import SourceRow, ValidRow, inspect_in_thread, validate_row
from crm_customer.store import CustomerStore, customer_row
from crm_customer.store.import_prepare import (
    CUSTOMER_COLUMNS,
    HISTORY_COLUMNS,
    KEY_COLUMNS,
    PIPE_BYTES,
    PROCESS_MIN_ROWS,
    WRITER_COLUMNS,
    BatchContext,
    ImportHelper,
    Preparation,
    RowPreparer,
    created_changes_json,
)
from crm_platform.pii import Keyring, WrappedKey, generate_master_keys
from crm_testing import xlsx_bombs
from crm_testing.nats_server import NatsServer
from crm_testing.processes import spawned_children
from crm_testing.services import running_service

NOW = dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC)
TODAY = NOW.date()


def _rows(count: int) -> list[SourceRow]:
    rows = []
    for index in range(count):
        cells = good_row(index)
        if index % 10 == 3:
            cells.update(BAD_KINDS[index % len(BAD_KINDS)][1])
        rows.append(SourceRow(index + 2, cells))
    return rows


def _keyring() -> Keyring:
    # Two master keys, so every ID number and mobile has a lookup hash under each.
    return Keyring.from_spec(f"{generate_master_keys('old')},{generate_master_keys('new')}", "new")


def _context(dry_run: bool = False) -> BatchContext:
    return BatchContext(dry_run, NOW, "BJ001", "north", "u-rm1", "import j1")


async def test_the_helper_prepares_rows_as_the_service_process_does() -> None:
    keyring = _keyring()
    rows = _rows(300)
    helper = ImportHelper(keyring)
    try:
        there = await helper.prepare_rows(_context(), rows)
        dry = await helper.prepare_rows(_context(dry_run=True), rows[:20])
    finally:
        helper.close()
    # A batch crosses each pipe in a few writes, not one per 64 KiB (Linux: see import_prepare.widen_pipes).
    assert len(helper.pipe_bytes) == 2 and min(helper.pipe_bytes) >= PIPE_BYTES
    here = RowPreparer(keyring).prepare_rows(_context(), rows)
    assert len(there) == len(here) == len(rows)
    tail = CUSTOMER_COLUMNS[len(WRITER_COLUMNS) :]
    valid = 0
    seen_ids: set[str] = set()
    for source, mine, theirs in zip(rows, here, there, strict=True):
        assert theirs.row == mine.row == source.row
        assert theirs.errors == mine.errors  # the same validation: the same violations
        assert (theirs.facts, theirs.file_keys, theirs.lookups) == (mine.facts, mine.file_keys, mine.lookups)
        outcome = validate_row(source, TODAY)
        if not isinstance(outcome, ValidRow):
            assert theirs.errors == tuple((v.field, v.description) for v in outcome)
            assert not theirs.valid and theirs.customer_id == "" and theirs.customer == ()
            continue
        valid += 1
        assert theirs.valid and theirs.owner_cell == outcome.owner
        assert theirs.customer_id and theirs.customer_id != mine.customer_id
        history = dict(zip(HISTORY_COLUMNS, theirs.history, strict=True))
        my_history = dict(zip(HISTORY_COLUMNS, mine.history, strict=True))
        assert history["changes"] == my_history["changes"] and history["customer_id"] == theirs.customer_id
        assert (history["action"], history["actor"], history["note"]) == ("created", "u-rm1", "import j1")
        assert uuid.UUID(history["id"]).version == 7 and history["id"] not in seen_ids
        assert uuid.UUID(theirs.customer_id).version == 7 and theirs.customer_id not in seen_ids
        seen_ids.update((history["id"], theirs.customer_id))
        columns, my_columns = dict(zip(tail, theirs.customer, strict=True)), dict(zip(tail, mine.customer, strict=True))
        assert columns["id"] == theirs.customer_id and columns["branch_id"] == "BJ001"
        plain = {k: v for k, v in columns.items() if not k.endswith("_enc") and k != "id"}
        assert plain == {k: v for k, v in my_columns.items() if not k.endswith("_enc") and k != "id"}
        # The helper's data key unwraps with the service's keyring and opens the helper's ciphertexts.
        key = dict(zip(KEY_COLUMNS, theirs.key, strict=True))
        data_key = keyring.unwrap(theirs.customer_id, WrappedKey(key["kid"], key["wrapped"]))
        for name in ("id_number", "mobile", "email", "address"):
            sealed = columns[f"{name}_enc"]
            assert keyring.decrypt(data_key, theirs.customer_id, name, sealed) == getattr(outcome.profile, name)
        # The record is the single create's row (customer_row), but for the number and owner the writer sets.
        customer = Customer(
            theirs.customer_id, "", outcome.kind, outcome.profile, "", "", "BJ001", "north", 1, "u-rm1", NOW, NOW
        )
        reference = customer_row(
            customer,
            "",
            CustomerStore(None, None, keyring)._profile_columns(  # type: ignore[arg-type]
                theirs.customer_id, data_key, outcome.profile
            ),
        )
        assert set(reference) == set(CUSTOMER_COLUMNS)
        assert {k: v for k, v in columns.items() if not k.endswith("_enc")} == {
            k: v for k, v in reference.items() if k in columns and not k.endswith("_enc")
        }
        created = events_pb2.CustomerCreated.FromString(events.with_ownership(theirs.created, "u-rm2", "t2"))
        assert created == events.customer_created(dataclasses.replace(customer, owner_id="u-rm2", team_id="t2"))
        assert (created.customer_id, created.owner_id, created.team_id) == (theirs.customer_id, "u-rm2", "t2")
        assert created.branch_id == "BJ001" and created.kind == customer_pb2.CUSTOMER_KIND_INDIVIDUAL
    assert 0 < valid < len(rows)
    assert all(item.customer_id == "" and item.customer == () for item in dry)  # a dry run writes nothing


def test_a_created_customers_history_is_its_changes_from_an_empty_file() -> None:
    """The import writes the history JSON directly: it must be what a single create writes."""
    for index in range(40):
        outcome = validate_row(_rows(40)[index], TODAY)
        if isinstance(outcome, ValidRow):
            expected = [dataclasses.asdict(c) for c in changes(Profile(name=""), outcome.profile)]
            assert created_changes_json(outcome.profile) == json.dumps(expected, ensure_ascii=False)
    odd = Profile(name='引号"\\ \t\n 换行\u2028', interests=("理财", "旅游"), annual_income="120000.50")
    expected = [dataclasses.asdict(c) for c in changes(Profile(name=""), odd)]
    assert created_changes_json(odd) == json.dumps(expected, ensure_ascii=False)
    assert json.loads(created_changes_json(odd)) == expected
    assert created_changes_json(Profile(name="")) == "[]"


async def test_a_helper_that_dies_costs_no_batch_and_is_replaced() -> None:
    keyring = _keyring()
    preparation = Preparation(RowPreparer(keyring), ImportHelper(keyring))
    rows = _rows(50)
    try:
        first = await preparation.prepare_rows(_context(), rows, PROCESS_MIN_ROWS)
        assert preparation.helper is not None
        pid = preparation.helper.pid
        assert pid is not None and pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.5)
        # The batch asked for meanwhile is prepared in this process, whole.
        second = await preparation.prepare_rows(_context(), rows, PROCESS_MIN_ROWS)
        assert [item.errors for item in second] == [item.errors for item in first]
        # And the next one by a new helper.
        third = await preparation.prepare_rows(_context(), rows, PROCESS_MIN_ROWS)
        assert [item.errors for item in third] == [item.errors for item in first]
        assert preparation.helper.pid not in (None, pid)
    finally:
        preparation.close()


async def test_a_small_job_is_prepared_in_the_service_process() -> None:
    keyring = _keyring()
    preparation = Preparation(RowPreparer(keyring), ImportHelper(keyring))
    try:
        await preparation.prepare_rows(_context(), _rows(10), PROCESS_MIN_ROWS - 1)
        assert preparation.helper is not None and preparation.helper.pid is None  # never started
    finally:
        preparation.close()


def test_an_import_events_envelope_reads_as_the_message_it_stands_for() -> None:
    """The import writes its envelopes' own fields after the batch's shared ones in protobuf's wire format: read
    back, they are the envelope the outbox would build (any payload size, an empty subject)."""
    from google.protobuf import empty_pb2

    from crm.common.v1 import envelope_pb2
    from crm_customer.store.imports import _Envelopes
    from crm_platform.outbox import TYPE_URL_PREFIX, make_envelope

    envelopes = _Envelopes(events.CUSTOMER_CREATED, "crm.customer", "u-rm1", NOW)
    shared = make_envelope(events.CUSTOMER_CREATED, "crm.customer", empty_pb2.Empty(), subject_id="", actor="u-rm1")
    for subject_id, name in (("c-1", "客户"), ("", "x" * 300)):
        payload = events_pb2.CustomerCreated(customer_id=subject_id, branch_id="BJ001", region=name).SerializeToString()
        event_id, subject, packed, at = envelopes.packed_row(subject_id, events.CUSTOMER_CREATED_TYPE, payload, "e-1")
        assert (event_id, subject, at) == ("e-1", events.CUSTOMER_CREATED, NOW)
        read = envelope_pb2.EventEnvelope.FromString(packed)
        assert (read.id, read.subject_id) == ("e-1", subject_id)
        assert read.payload.type_url == TYPE_URL_PREFIX + events.CUSTOMER_CREATED_TYPE and read.payload.value == payload
        assert (read.type, read.source, read.actor, read.schema_version) == (
            shared.type,
            shared.source,
            shared.actor,
            shared.schema_version,
        )
        assert abs(read.occurred_at.ToDatetime(dt.UTC) - shared.occurred_at.ToDatetime(dt.UTC)) < dt.timedelta(
            seconds=5
        )
    assert envelopes.packed_row("c-2", events.CUSTOMER_CREATED_TYPE, b"")[0] != "e-1"  # a new id when none is given


def _spooled(tmp_path: Path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


async def test_the_helper_inspects_xlsx_files_as_a_thread_does(tmp_path: Path) -> None:
    """Uploaded XLSX files are inspected in the helper process (off the service's GIL): the same facts, and the
    same refusal of a bomb, as in a worker thread of the service."""
    keyring = _keyring()
    preparation = Preparation(RowPreparer(keyring), ImportHelper(keyring))
    limits = ImportLimits(max_rows=1000)
    good = _spooled(tmp_path, "good.xlsx", xlsx_bombs.many_rows(1000, declared=False))
    bomb = _spooled(tmp_path, "bomb.xlsx", xlsx_bombs.many_rows(1001, declared=False))
    try:
        preparation.start()
        assert preparation.helper is not None
        facts = await preparation.inspect_xlsx(good, limits)
        assert preparation.helper.pid not in (None, os.getpid())
        assert facts == await inspect_in_thread(good, limits) and facts.total == 1000
        with pytest.raises(ImportFileRejected) as there:
            await preparation.inspect_xlsx(bomb, limits)
        with pytest.raises(ImportFileRejected) as here:
            await inspect_in_thread(bomb, limits)
        assert there.value.violations == here.value.violations
        assert "more than the limit of 1,000 rows" in there.value.violations[0].description
        # A helper that dies meanwhile: the file is inspected in the service process, and a new helper follows.
        pid = preparation.helper.pid
        os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
        await asyncio.sleep(0.5)
        assert await preparation.inspect_xlsx(good, limits) == facts
        assert await preparation.inspect_xlsx(good, limits) == facts
        assert preparation.helper.pid not in (None, pid)
    finally:
        preparation.close()


async def test_the_helper_reads_xlsx_rows_as_a_thread_does(tmp_path: Path) -> None:
    """An import's XLSX file is read in the helper process too (openpyxl's parse off the service's GIL): the same
    batches as a worker thread reads; a helper killed in the middle of the file costs no row and repeats none."""
    from crm_customer.domain.imports import rows_in_thread

    keyring = _keyring()
    preparation = Preparation(RowPreparer(keyring), ImportHelper(keyring))
    path = _spooled(tmp_path, "good.xlsx", xlsx_bombs.many_rows(1000, declared=False))
    facts = await inspect_in_thread(path, ImportLimits())

    async def rows(batches: object) -> list[tuple[int, dict[str, str]]]:
        return [(row.row, row.cells) async for batch in batches for row in batch]  # type: ignore[attr-defined]

    try:
        preparation.start()
        assert preparation.helper is not None
        expected = await rows(rows_in_thread(path, facts, 0, 100))
        assert len(expected) == 1000
        assert await rows(preparation.xlsx_rows(path, facts, 0, 100)) == expected
        assert await rows(preparation.xlsx_rows(path, facts, 500, 100)) == expected[499:]  # after row 500
        read: list[tuple[int, dict[str, str]]] = []
        async for batch in preparation.xlsx_rows(path, facts, 0, 100):
            read += [(row.row, row.cells) for row in batch]
            if len(read) == 300:
                os.kill(preparation.helper.pid, signal.SIGKILL)  # type: ignore[arg-type]
                await asyncio.sleep(0.5)
        assert read == expected
    finally:
        preparation.close()


async def test_the_service_starts_its_helper_with_itself(
    sqlite_url: str, module_nats: NatsServer, tmp_path: Path
) -> None:
    """The first XLSX upload after a start does not wait for the helper to start: it runs already (and it ends
    with the service)."""
    from crm_customer.server import SPEC

    before = set(spawned_children(os.getpid()))  # the service runs in this process: its helper is our child
    async with running_service(SPEC, database_url=sqlite_url, nats_url=module_nats.url, data_dir=tmp_path):
        for _ in range(100):
            started = set(spawned_children(os.getpid())) - before
            if started:
                break
            await asyncio.sleep(0.1)
        assert len(started) == 1, "one helper, started before any upload"
    for _ in range(100):
        if not started & set(spawned_children(os.getpid())):
            break
        await asyncio.sleep(0.1)
    assert not started & set(spawned_children(os.getpid())), "the helper ends with the service"
