"""The import's row preparation in the helper process: the same outcome as in the service's process, its
encryption readable with the service's keyring, and a helper that dies costs no batch."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal

from import_files import BAD_KINDS, good_row

from crm_customer.domain.imports import SourceRow, ValidRow
from crm_customer.store.import_prepare import PROCESS_MIN_ROWS, Preparation, PrepareProcess, RowPreparer
from crm_platform.pii import Keyring, generate_master_keys

TODAY = dt.date(2026, 11, 24)


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


async def test_the_helper_prepares_rows_as_the_service_process_does() -> None:
    keyring = _keyring()
    rows = _rows(300)
    helper = PrepareProcess(keyring)
    try:
        there = await helper.prepare_rows(False, rows, TODAY)
        dry = await helper.prepare_rows(True, rows[:20], TODAY)
    finally:
        helper.close()
    here = RowPreparer(keyring).prepare_rows(False, rows, TODAY)
    assert len(there) == len(here) == len(rows)
    valid = 0
    for mine, theirs in zip(here, there, strict=True):
        assert theirs.source == mine.source
        assert theirs.outcome == mine.outcome  # the same validation: the same profile, or the same violations
        assert (theirs.facts, theirs.file_keys, theirs.lookups) == (mine.facts, mine.file_keys, mine.lookups)
        if not isinstance(theirs.outcome, ValidRow):
            assert theirs.columns is None and theirs.customer_id == ""
            continue
        valid += 1
        assert theirs.changes == mine.changes
        assert theirs.customer_id and theirs.customer_id != mine.customer_id
        assert theirs.columns is not None and mine.columns is not None
        plain = {k: v for k, v in theirs.columns.items() if not k.endswith("_enc")}
        assert plain == {k: v for k, v in mine.columns.items() if not k.endswith("_enc")}
        # The helper's data key unwraps with the service's keyring and opens the helper's ciphertexts.
        assert theirs.wrapped is not None
        data_key = keyring.unwrap(theirs.customer_id, theirs.wrapped)
        profile = theirs.outcome.profile
        for name in ("id_number", "mobile", "email", "address"):
            sealed = theirs.columns[f"{name}_enc"]
            assert keyring.decrypt(data_key, theirs.customer_id, name, sealed) == getattr(profile, name)
    assert 0 < valid < len(rows)
    assert all(item.customer_id == "" and item.columns is None for item in dry)  # a dry run writes nothing


async def test_a_helper_that_dies_costs_no_batch_and_is_replaced() -> None:
    keyring = _keyring()
    preparation = Preparation(RowPreparer(keyring), PrepareProcess(keyring))
    rows = _rows(50)
    try:
        first = await preparation.prepare_rows(False, rows, TODAY, PROCESS_MIN_ROWS)
        assert preparation.helper is not None
        pid = preparation.helper.pid
        assert pid is not None and pid != os.getpid()
        os.kill(pid, signal.SIGKILL)
        await asyncio.sleep(0.5)
        # The batch asked for meanwhile is prepared in this process, whole.
        second = await preparation.prepare_rows(False, rows, TODAY, PROCESS_MIN_ROWS)
        assert [item.outcome for item in second] == [item.outcome for item in first]
        # And the next one by a new helper.
        third = await preparation.prepare_rows(False, rows, TODAY, PROCESS_MIN_ROWS)
        assert [item.outcome for item in third] == [item.outcome for item in first]
        assert preparation.helper.pid not in (None, pid)
    finally:
        preparation.close()


async def test_a_small_job_is_prepared_in_the_service_process() -> None:
    keyring = _keyring()
    preparation = Preparation(RowPreparer(keyring), PrepareProcess(keyring))
    try:
        await preparation.prepare_rows(False, _rows(10), TODAY, PROCESS_MIN_ROWS - 1)
        assert preparation.helper is not None and preparation.helper.pid is None  # never started
    finally:
        preparation.close()
