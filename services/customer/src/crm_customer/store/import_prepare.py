"""The database-free work of an import, per row: validation, lookup hashes, a data key, encrypted columns and
the history entry — in this process, or in a helper process on a core of its own.

A row costs about 160 µs of CPU here (measured on a 2-core machine, half of the customer service's CPU per
imported row), and the import worker prepares the next batch while the previous one is written. In one process
that overlap is only of waiting: preparing holds the event loop, so the writer's own CPU work (matching
duplicates, building the COPY records, the events) waits behind it. :class:`PrepareProcess` moves preparing to
one helper process: the service's process then only writes, and the two run side by side. Its batches travel
pickled (about 30 µs a row both ways), the helper gets the keyring once when it starts, and it ends with the
service (``PR_SET_PDEATHSIG`` on Linux; the pool is also shut down when the worker stops). Should it die, the
batch is prepared here instead and a new helper is started for the next one.

Small jobs stay in-process (see :data:`PROCESS_MIN_ROWS`): starting the helper costs about a second once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as dt
import json
import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from crm_customer.domain import PROFILE_FIELDS, Profile, display_value
from crm_customer.domain.imports import SourceRow, ValidRow, duplicate_keys, validate_row
from crm_customer.store import CustomerStore
from crm_platform.errors import FieldViolation
from crm_platform.ids import new_id
from crm_platform.pii import Keyring, WrappedKey

log = logging.getLogger(__name__)

# Jobs of at least this many rows are prepared in the helper process (when one is configured).
PROCESS_MIN_ROWS = 5000
# Rows of CPU work done in the event loop before it lets other tasks run.
SLICE = 200


@dataclass(frozen=True)
class PreparedRow:
    """A row of a batch after the work that needs no database (:meth:`RowPreparer.prepare`)."""

    source: SourceRow
    outcome: ValidRow | list[FieldViolation]
    facts: tuple[tuple[str, str], ...] = ()  # (field, value) a duplicate would share; empty when invalid
    file_keys: tuple[str, ...] = ()  # per fact, the key the file's earlier rows are matched on
    lookups: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # hashes, every key
    customer_id: str = ""  # the id it gets if imported (not in a dry run)
    wrapped: WrappedKey | None = None  # its data key, wrapped
    columns: dict[str, Any] | None = None  # its profile columns, personal ones encrypted under that key
    changes: str = ""  # its history entry's changes


_EMPTY = Profile(name="")
# Each field's empty value and how it shows (computed once: this runs for every imported row).
_FROM_EMPTY = [(name, getattr(_EMPTY, name), display_value(name, getattr(_EMPTY, name))) for name in PROFILE_FIELDS]


def created_changes_json(profile: Profile) -> str:
    """The history ``changes`` of a created customer, as JSON: the same as :func:`changes` from an empty profile."""
    return json.dumps(
        [
            {"field": name, "before": before, "after": display_value(name, value)}
            for name, empty, before in _FROM_EMPTY
            if (value := getattr(profile, name)) != empty
        ],
        ensure_ascii=False,
    )


class RowPreparer:
    """Prepares rows with the service's keyring (no database)."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._customers = CustomerStore(None, None, keyring)  # type: ignore[arg-type]  # its column mapping only

    def prepare_rows(self, dry_run: bool, rows: Sequence[SourceRow], today: dt.date) -> list[PreparedRow]:
        """:meth:`prepare` for each of ``rows``."""
        return [self.prepare(dry_run, source, today) for source in rows]

    def prepare(self, dry_run: bool, source: SourceRow, today: dt.date) -> PreparedRow:
        """Validate ``source``; for a valid row, its duplicate facts and lookup hashes and, unless ``dry_run``,
        its new id, data key, encrypted columns and history entry."""
        outcome = validate_row(source, today)
        if not isinstance(outcome, ValidRow):
            return PreparedRow(source, outcome)
        keyring = self._keyring
        facts = tuple(duplicate_keys(outcome.profile))
        lookups: dict[tuple[str, str], list[str]] = {}
        file_keys = []
        for name, value in facts:
            if name == "credit_code":  # stored in the clear (not personal data): matched as it is
                file_keys.append(f"{name}:{keyring.lookup_hash(name, value)}")
                continue
            hashes = lookups[(name, value)] = keyring.lookup_hashes(name, value)
            active = next(h for h in hashes if h.startswith(f"{keyring.active_kid}:"))
            file_keys.append(f"{name}:{active}")
        if dry_run:
            return PreparedRow(source, outcome, facts, tuple(file_keys), lookups)
        customer_id = new_id()
        data_key, wrapped = keyring.new_data_key(customer_id)
        return PreparedRow(
            source,
            outcome,
            facts,
            tuple(file_keys),
            lookups,
            customer_id=customer_id,
            wrapped=wrapped,
            columns=self._customers._profile_columns(customer_id, data_key, outcome.profile),
            changes=created_changes_json(outcome.profile),
        )


# The helper process's side.

_child: RowPreparer | None = None


def _start_child(keyring: Keyring, parent: int) -> None:
    """Initializer of the helper: end with the parent, then hold the keyring."""
    global _child
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(0)
    _child = RowPreparer(keyring)


def _prepare_in_child(dry_run: bool, rows: Sequence[SourceRow], today: dt.date) -> list[PreparedRow]:
    assert _child is not None, "the helper process was not initialised"
    return _child.prepare_rows(dry_run, rows, today)


class PrepareProcess:
    """One helper process preparing batches (started on first use, ended by :meth:`close`)."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._pool: ProcessPoolExecutor | None = None

    @property
    def pid(self) -> int | None:
        """The helper's process id, once started."""
        processes = getattr(self._pool, "_processes", None) or {}
        return next(iter(processes), None)

    async def prepare_rows(self, dry_run: bool, rows: Sequence[SourceRow], today: dt.date) -> list[PreparedRow]:
        """The rows prepared by the helper; ``BrokenProcessPool`` when it died meanwhile (it is then restarted
        on the next call)."""
        if self._pool is None:
            # "spawn": a fresh interpreter. Forking this process would copy its gRPC and event loop threads'
            # state into a child that never runs them.
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=context, initializer=_start_child, initargs=(self._keyring, os.getpid())
            )
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, _prepare_in_child, dry_run, rows, today)
        except BrokenProcessPool:
            if self._pool is pool:
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise

    def close(self) -> None:
        """Stop the helper (without waiting for it)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class Preparation:
    """How a store prepares batches: here, or in a helper process for jobs of :data:`PROCESS_MIN_ROWS` rows."""

    here: RowPreparer
    helper: PrepareProcess | None = None

    async def prepare_rows(
        self, dry_run: bool, rows: Sequence[SourceRow], today: dt.date, job_rows: int
    ) -> list[PreparedRow]:
        """The prepared rows of a batch of a job of ``job_rows`` rows."""
        if self.helper is not None and job_rows >= PROCESS_MIN_ROWS:
            try:
                return await self.helper.prepare_rows(dry_run, rows, today)
            except BrokenProcessPool:
                log.warning("import helper process died; preparing this batch in the service process")
        items: list[PreparedRow] = []
        for start in range(0, len(rows), SLICE):
            items.extend(self.here.prepare_rows(dry_run, rows[start : start + SLICE], today))
            await asyncio.sleep(0)  # CPU work: let the batch being written (and progress reads) run between slices
        return items

    def close(self) -> None:
        """Stop the helper process, if any."""
        if self.helper is not None:
            self.helper.close()
