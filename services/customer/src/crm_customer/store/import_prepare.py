"""The database-free work of an import, per row: validation, lookup hashes, a data key, the encrypted columns, and
the row's records ready to write — in this process, or in a helper process on a core of its own, which also
inspects uploaded XLSX files.

A row costs about 100 µs of CPU here, its transfer included (measured on a 2-core machine: more than the customer
service's own work per imported row). The import worker has the next batches prepared while one is decided and the
one before written (``import_worker.PREPARE_AHEAD``). In one process that overlap is only of waiting: preparing
holds the event loop, so the writer's own CPU work waits behind it. :class:`ImportHelper` moves preparing to one
helper process, and the processes run side by side. Its batches travel pickled: the rows as plain tuples
(:class:`PreparedRow`), about 20 µs a row both ways, where dataclass trees cost the service 45 µs a row to unpickle
alone. The helper gets the keyring once when it starts, and it ends with the service (``PR_SET_PDEATHSIG`` on Linux;
the pool is also shut down when the worker stops). Should it die, the batch is prepared here instead and a new
helper is started for the next one.

Small jobs stay in-process (see :data:`PROCESS_MIN_ROWS`): starting the helper costs about a second once.

The helper also inspects every uploaded XLSX file (:meth:`Preparation.inspect_xlsx`): openpyxl's parse, and the
cheap pass that refuses a spreadsheet bomb, are CPU work that in a thread of the service holds its GIL — a row bomb
without a ``<dimension>`` took 0.35 s alone but over a second beside other users' reads, and doubled their p99.
So that the first upload after a start does not wait for the helper to start, the service starts it with itself
(:meth:`ImportHelper.start`). One helper does both: an inspection waits for the batch it is preparing (a tenth of
a second), and a large file's inspection (30,000 rows a second) delays the batches of an import running meanwhile.
An import of an XLSX file reads its rows in the helper too (:meth:`Preparation.xlsx_rows`, batch by batch, the open
reader kept in the helper between calls); should the helper die, the rest is read in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as dt
import fcntl
import itertools
import logging
import multiprocessing
import operator
import os
import signal
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from json.encoder import encode_basestring as _json_string  # a str as json.dumps(..., ensure_ascii=False) writes it
from typing import Any, NamedTuple

from crm_customer import events
from crm_customer.domain import PROFILE_FIELDS, SENSITIVE_FIELDS, Customer, CustomerKind, Profile, display_value
from crm_customer.domain.import_bounds import ImportLimits
from crm_customer.domain.imports import (
    FileFacts,
    SourceRow,
    ValidRow,
    duplicate_keys,
    inspect_in_thread,
    inspect_xlsx_file,
    rows_in_thread,
    validate_row,
    xlsx_rows,
)
from crm_customer.store import CustomerStore, customer_row, history_row, key_row
from crm_customer.store.tables import customer_history, customer_keys, customers
from crm_platform.heap import freeze_startup_heap, use_batch_collection
from crm_platform.ids import new_ids
from crm_platform.pii import Keyring

log = logging.getLogger(__name__)

# Jobs of at least this many rows are prepared in the helper process (when one is configured).
PROCESS_MIN_ROWS = 5000
# Rows of CPU work done in the event loop before it lets other tasks run.
SLICE = 200
# Capacity asked for the pipes to and from the helper (Linux's default is 64 KiB; an unprivileged process may ask
# up to /proc/sys/fs/pipe-max-size, 1 MiB by default).
PIPE_BYTES = 1 << 20


@dataclass(frozen=True)
class BatchContext:
    """What every row of a batch shares: whether it is a dry run, and the facts of the job a new customer gets
    (its branch, its creator, the time) — so that the rows can be prepared ready to write."""

    dry_run: bool
    now: dt.datetime
    branch_id: str = ""
    region: str = ""
    actor: str = ""  # the job's creator
    note: str = ""  # the history note of each created customer

    @property
    def today(self) -> dt.date:
        """The date validation judges ages and expiries by."""
        return self.now.date()


# The customers columns the writer fills in per batch, first in the COPY; the prepared row carries the rest.
WRITER_COLUMNS = ("customer_no", "owner_id", "team_id")
CUSTOMER_COLUMNS = (*WRITER_COLUMNS, *(c.name for c in customers.c if c.name not in WRITER_COLUMNS))
KEY_COLUMNS = tuple(c.name for c in customer_keys.c)
HISTORY_COLUMNS = tuple(c.name for c in customer_history.c)
_customer_tail = operator.itemgetter(*CUSTOMER_COLUMNS[len(WRITER_COLUMNS) :])
_TAIL_AT = {name: index for index, name in enumerate(CUSTOMER_COLUMNS[len(WRITER_COLUMNS) :])}
_key_record = operator.itemgetter(*KEY_COLUMNS)
_history_record = operator.itemgetter(*HISTORY_COLUMNS)


class PreparedRow(NamedTuple):
    """A row of a batch after the work that needs no database (:meth:`RowPreparer.prepare`).

    Plain values only (a tuple of strings, bytes, dates and tuples): it travels pickled from the helper process,
    and a tree of dataclasses (source row, profile, column dict) cost the service's process 45 µs a row to
    unpickle, more than all of its own work on the row.
    """

    row: int  # the file's row number
    errors: tuple[tuple[str, str], ...] = ()  # (field, reason) of an invalid row; empty when valid
    facts: tuple[tuple[str, str], ...] = ()  # (field, value) a duplicate would share
    file_keys: tuple[str, ...] = ()  # per fact, the key the file's earlier rows are matched on
    lookups: tuple[tuple[tuple[str, str], tuple[str, ...]], ...] = ()  # (fact, its hashes under every key)
    owner_cell: str = ""  # the owner column, for distribution by column
    customer_id: str = ""  # the id it gets if imported (not in a dry run)
    customer: tuple[Any, ...] = ()  # its customers row after WRITER_COLUMNS: personal fields encrypted
    key: tuple[Any, ...] = ()  # its customer_keys row: its data key, wrapped
    history: tuple[Any, ...] = ()  # its customer_history row: "created", with the masked field changes
    created: bytes = b""  # its customer.created payload, serialized without ownership (events.with_ownership)

    @property
    def valid(self) -> bool:
        """Whether the row passed validation."""
        return not self.errors


_EMPTY = Profile(name="")
# Each field's empty value, the start of its history change from empty up to the value after, and its mask
# (computed once: this runs for every imported row).
_FROM_EMPTY = [
    (
        name,
        getattr(_EMPTY, name),
        f'{{"field": {_json_string(name)}, "before": {_json_string(display_value(name, getattr(_EMPTY, name)))}, '
        '"after": ',
        SENSITIVE_FIELDS.get(name),
    )
    for name in PROFILE_FIELDS
]


def created_changes_json(profile: Profile) -> str:
    """The history ``changes`` of a created customer, as JSON: what :func:`json.dumps` makes of :func:`changes`
    from an empty profile (``ensure_ascii=False``), written directly — the encoder's set-up per call cost more
    than the text. A text value shows as :func:`display_value` shows it: masked if sensitive, else as it is."""
    parts = []
    for name, empty, head, mask in _FROM_EMPTY:
        value = getattr(profile, name)
        if value == empty:
            continue
        if type(value) is not str:
            shown = display_value(name, value)
        elif mask is not None:
            shown = mask(value)
        else:
            shown = value
        parts.append(f"{head}{_json_string(shown)}}}")
    return f"[{', '.join(parts)}]"


class RowPreparer:
    """Prepares rows with the service's keyring (no database)."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._customers = CustomerStore(None, None, keyring)  # type: ignore[arg-type]  # its column mapping only

    def prepare_rows(self, context: BatchContext, rows: Sequence[SourceRow]) -> list[PreparedRow]:
        """:meth:`prepare` for each of ``rows``."""
        template = _customer_template(context)
        ids = iter(new_ids(0 if context.dry_run else 2 * len(rows)))  # a customer's and its history row's
        return [self.prepare(context, source, template, ids) for source in rows]

    def prepare(self, context: BatchContext, source: SourceRow, template: list[Any], ids: Iterator[str]) -> PreparedRow:
        """Validate ``source``; for a valid row, its duplicate facts and lookup hashes and, unless a dry run, its
        new id and its rows ready to write: the customer (but for its number and owner; set into ``template``,
        :func:`_customer_template`), its wrapped data key, its history entry, and its ``customer.created``
        payload (but for the owner). A row written takes two of ``ids``: its customer's and its history row's."""
        outcome = validate_row(source, context.today)
        if not isinstance(outcome, ValidRow):
            return PreparedRow(source.row, tuple((v.field, v.description) for v in outcome))
        keyring = self._keyring
        profile = outcome.profile
        facts = tuple(duplicate_keys(profile))
        lookups = []
        file_keys = []
        hashed: dict[str, str] = {}  # field → its hash under the active key
        for name, value in facts:
            if name == "credit_code":  # stored in the clear (not personal data): matched as it is
                file_keys.append(f"{name}:{keyring.lookup_hash(name, value)}")
                continue
            hashes = tuple(keyring.lookup_hashes(name, value))
            lookups.append(((name, value), hashes))
            hashed[name] = hashes[0]  # the active key's
            file_keys.append(f"{name}:{hashed[name]}")
        if context.dry_run:
            return PreparedRow(source.row, (), facts, tuple(file_keys), tuple(lookups), outcome.owner)
        now = context.now
        customer_id, history_id = next(ids), next(ids)
        data_key, wrapped = keyring.new_data_key(customer_id)
        columns = self._customers._profile_columns(customer_id, data_key, profile, hashed)
        changes = created_changes_json(profile)
        created = events.created_payload(customer_id, outcome.kind.value, profile, context.branch_id, context.region)
        return PreparedRow(
            source.row,
            (),
            facts,
            tuple(file_keys),
            tuple(lookups),
            outcome.owner,
            customer_id,
            _customer_record(template, customer_id, outcome.kind.value, columns),
            _key_record(key_row(customer_id, wrapped, now)),
            _history_record(history_row(customer_id, "created", context.actor, now, context.note, changes, history_id)),
            created.SerializeToString(),
        )


def _customer_template(context: BatchContext) -> list[Any]:
    """The customer record (after :data:`WRITER_COLUMNS`) every new customer of the batch starts from: the column
    defaults and the job's facts, as :func:`customer_row` gives them."""
    stub = Customer(
        id="",
        customer_no="",
        kind=CustomerKind.INDIVIDUAL,
        profile=_EMPTY,
        owner_id="",
        team_id="",
        branch_id=context.branch_id,
        region=context.region,
        version=1,
        created_by=context.actor,
        created_at=context.now,
        updated_at=context.now,
    )
    return list(_customer_tail(customer_row(stub, "", {})))


def _customer_record(template: list[Any], customer_id: str, kind: str, columns: dict[str, Any]) -> tuple[Any, ...]:
    """A customer's record: what :func:`customer_row` gives for it, set into the batch's ``template`` by position
    instead of merged as dictionaries."""
    record = template.copy()
    record[_TAIL_AT["id"]] = customer_id
    record[_TAIL_AT["kind"]] = kind
    for name, value in columns.items():
        record[_TAIL_AT[name]] = value
    return tuple(record)


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
    freeze_startup_heap()  # as the service does: its modules out of the collector's way
    use_batch_collection()


def _prepare_in_child(context: BatchContext, rows: Sequence[tuple[int, dict[str, str], bool]]) -> list[tuple[Any, ...]]:
    assert _child is not None, "the helper process was not initialised"
    # Both ways as plain tuples: a dataclass or a named tuple pickles through a Python-level call per row.
    prepared = _child.prepare_rows(context, [SourceRow(row, cells, extra) for row, cells, extra in rows])
    return [tuple(item) for item in prepared]


_readers: dict[int, Generator[list[SourceRow], None, None]] = {}  # the XLSX files the helper reads, by the key it gave
_reader_keys = itertools.count(1)


def _open_rows(path: str, facts: FileFacts, after_row: int, batch_size: int) -> int:
    key = next(_reader_keys)
    _readers[key] = xlsx_rows(path, facts, after_row, batch_size)
    return key


def _next_rows(key: int) -> list[tuple[int, dict[str, str], bool]] | None:
    batch = next(_readers[key], None)
    if batch is None:
        _close_rows(key)
        return None
    return [(source.row, source.cells, source.extra) for source in batch]


def _close_rows(key: int) -> None:
    reader = _readers.pop(key, None)
    if reader is not None:
        reader.close()


def _started() -> int:
    return os.getpid()


def widen_pipes(pool: ProcessPoolExecutor, size: int = PIPE_BYTES) -> list[int]:
    """Give the pool's call and result pipes ``size`` bytes of capacity, where the system allows; their
    capacities after.

    A prepared batch of 1,000 rows is about 1.5 MB pickled. Through a 64 KiB pipe it goes in some 23 writes, each
    waiting for the service's result thread to read the one before, a thread that needs the GIL for each read.
    Measured over 8 s of a 100,000-row import: the helper's context switches went from 3,572 to 1,778, the
    service's from 6,336 to 5,433; the import's throughput moved less than the machine's own noise. The pools'
    queues are private attributes of ``concurrent.futures``: a Python that names them differently leaves the pipes
    as they are (a test checks that this one widens them)."""
    sizes = []
    for queue in (getattr(pool, "_call_queue", None), getattr(pool, "_result_queue", None)):
        reader = getattr(queue, "_reader", None)
        try:
            fd = reader.fileno()  # type: ignore[union-attr]
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
            sizes.append(fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ))
        except (AttributeError, OSError) as exc:
            log.debug("import helper pipe left at its default capacity: %s", exc)
    return sizes


class ImportHelper:
    """One helper process preparing batches and inspecting XLSX files (started by :meth:`start` or on first use,
    ended by :meth:`close`)."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._pool: ProcessPoolExecutor | None = None
        self.pipe_bytes: list[int] = []  # the capacities of the pipes to and from the helper, once started

    @property
    def pid(self) -> int | None:
        """The helper's process id, once started."""
        processes = getattr(self._pool, "_processes", None) or {}
        return next(iter(processes), None)

    def _started_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # "spawn": a fresh interpreter. Forking this process would copy its gRPC and event loop threads'
            # state into a child that never runs them.
            spawn = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=spawn, initializer=_start_child, initargs=(self._keyring, os.getpid())
            )
            self.pipe_bytes = widen_pipes(self._pool)
        return self._pool

    def start(self) -> None:
        """Start the helper now (in the background: it is ready about a second later), not at its first use."""
        self._started_pool().submit(_started)

    async def _call(self, function: Any, *args: Any) -> Any:
        """``function(*args)`` in the helper; ``BrokenProcessPool`` when it died meanwhile (it is then restarted on
        the next call)."""
        pool = self._started_pool()
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, function, *args)
        except BrokenProcessPool:
            if self._pool is pool:
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise

    async def prepare_rows(self, context: BatchContext, rows: Sequence[SourceRow]) -> list[PreparedRow]:
        """The rows prepared by the helper (``BrokenProcessPool`` when it died meanwhile)."""
        sources = [(source.row, source.cells, source.extra) for source in rows]
        items = await self._call(_prepare_in_child, context, sources)
        return [PreparedRow._make(item) for item in items]

    async def inspect_xlsx(self, path: str, limits: ImportLimits) -> FileFacts:
        """The facts of the XLSX file at ``path``, checked by the helper (``BrokenProcessPool`` when it died)."""
        return await self._call(inspect_xlsx_file, path, limits)  # type: ignore[no-any-return]

    async def xlsx_rows(
        self, path: str, facts: FileFacts, after_row: int, batch_size: int
    ) -> AsyncIterator[list[SourceRow]]:
        """The batches of the XLSX file at ``path``, read by the helper (``BrokenProcessPool`` when it died)."""
        key = await self._call(_open_rows, path, facts, after_row, batch_size)
        try:
            while (items := await self._call(_next_rows, key)) is not None:
                yield [SourceRow(row, cells, extra) for row, cells, extra in items]
        finally:
            with contextlib.suppress(BrokenProcessPool):
                await self._call(_close_rows, key)

    def close(self) -> None:
        """Stop the helper (without waiting for it)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class Preparation:
    """How a store prepares batches (here, or in a helper process for jobs of :data:`PROCESS_MIN_ROWS` rows) and
    inspects XLSX files (in the helper process, or a worker thread)."""

    here: RowPreparer
    helper: ImportHelper | None = None

    def start(self) -> None:
        """Start the helper process, if any, with the service."""
        if self.helper is not None:
            self.helper.start()

    async def inspect_xlsx(self, path: str, limits: ImportLimits) -> FileFacts:
        """The facts of an uploaded XLSX file (an ``XlsxInspector`` of ``domain.imports``)."""
        if self.helper is not None:
            try:
                return await self.helper.inspect_xlsx(path, limits)
            except BrokenProcessPool:
                log.warning("import helper process died; inspecting this file in the service process")
        return await inspect_in_thread(path, limits)

    async def xlsx_rows(
        self, path: str, facts: FileFacts, after_row: int, batch_size: int
    ) -> AsyncIterator[list[SourceRow]]:
        """The batches of an inspected XLSX file (an ``XlsxReader`` of ``domain.imports``): read by the helper
        process; should it die, the rest of the file is read in a worker thread, from the last row it gave."""
        if self.helper is not None:
            try:
                async with contextlib.aclosing(self.helper.xlsx_rows(path, facts, after_row, batch_size)) as batches:
                    async for batch in batches:
                        yield batch
                        after_row = batch[-1].row
                return
            except BrokenProcessPool:
                log.warning("import helper process died; reading the rest of this file in the service process")
        async with contextlib.aclosing(rows_in_thread(path, facts, after_row, batch_size)) as batches:
            async for batch in batches:
                yield batch

    async def prepare_rows(self, context: BatchContext, rows: Sequence[SourceRow], job_rows: int) -> list[PreparedRow]:
        """The prepared rows of a batch of a job of ``job_rows`` rows."""
        if self.helper is not None and job_rows >= PROCESS_MIN_ROWS:
            try:
                return await self.helper.prepare_rows(context, rows)
            except BrokenProcessPool:
                log.warning("import helper process died; preparing this batch in the service process")
        items: list[PreparedRow] = []
        for start in range(0, len(rows), SLICE):
            items.extend(self.here.prepare_rows(context, rows[start : start + SLICE]))
            await asyncio.sleep(0)  # CPU work: let the batch being written (and progress reads) run between slices
        return items

    def close(self) -> None:
        """Stop the helper process, if any."""
        if self.helper is not None:
            self.helper.close()
