"""Import jobs: the spooled file, the per-row report, and the batched writes of imported customers.

A job's file is kept as chunks in ``customer_import_chunks`` until the job finishes, so any replica can
resume it after a crash. Each batch of rows is one transaction: its customers, their data keys, history
rows and ``customer.created`` events, its report rows (keyed by job and row number) and the job's checkpoint
(the last row done) commit together, guarded by the checkpoint it started from, so a batch is applied once
or not at all. A batch is decided (:meth:`ImportStore.decide_batch`: reads and CPU) before it is written
(:meth:`ImportStore.write_batch`: that transaction), so the worker decides the next batch while one is written.
On PostgreSQL the hot path writes with ``COPY`` (asyncpg) inside that transaction and looks up a batch's values
in one statement each, and a job is held by a session advisory lock while it runs: a killed process releases it
with its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    any_,
    bindparam,
    delete,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from crm.common.v1 import envelope_pb2
from crm.customer.v1 import import_service_pb2
from crm_customer import events
from crm_customer.domain import Customer, CustomerKind, Profile, new_customer_numbers
from crm_customer.domain.imports import (
    Distribution,
    DistributionPlan,
    FileFacts,
    ImportFormat,
    SourceRow,
    Staff,
    untouched,
)
from crm_customer.store import CustomerStore
from crm_customer.store.import_prepare import (
    CUSTOMER_COLUMNS,
    HISTORY_COLUMNS,
    KEY_COLUMNS,
    SLICE,
    BatchContext,
    ImportHelper,
    Preparation,
    PreparedRow,
    RowPreparer,
)
from crm_customer.store.tables import customer_history, customer_holdings, customer_keys, customer_tags, customers
from crm_platform.auth_context import Identity, Scope
from crm_platform.db import as_utc, is_postgres
from crm_platform.driver import driver_of, integrity_as_sqlalchemy
from crm_platform.errors import Conflict, FailedPrecondition, NotFound
from crm_platform.ids import new_id, new_ids
from crm_platform.outbox import TYPE_URL_PREFIX, Outbox, PendingEvent, bundle_rows, make_envelope
from crm_platform.redaction import describe_error
from crm_platform.schema import outbox as outbox_table
from crm_platform.scope import in_scope, scope_condition

log = logging.getLogger(__name__)

IMPORTED_EVENT = "crm.customer.import.imported"
ROLLED_BACK_EVENT = "crm.customer.import.rolled_back"

import_metadata = MetaData()

jobs = Table(
    "customer_imports",
    import_metadata,
    Column("id", String(36), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("file_name", String(200), nullable=False),
    Column("format", String(10), nullable=False),
    Column("file_sha256", String(64), nullable=False),
    Column("file_size", BigInteger, nullable=False),
    Column("encoding", String(20), nullable=False),
    Column("columns", Text, nullable=False),
    Column("dry_run", Boolean, nullable=False),
    Column("distribution", String(20), nullable=False),
    Column("distribution_team_id", String(64), nullable=False),
    Column("staff", Text, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("creator_roles", String(200), nullable=False),
    Column("creator_scope", String(20), nullable=False),
    Column("creator_permissions", Text, nullable=False),
    Column("branch_id", String(64), nullable=False),
    Column("team_id", String(64), nullable=False),
    Column("region", String(64), nullable=False),
    Column("total", Integer, nullable=False),
    Column("checkpoint_row", Integer, nullable=False),
    Column("processed", Integer, nullable=False),
    Column("imported", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("duplicates", Integer, nullable=False),
    Column("rolled_back", Integer, nullable=False),
    Column("kept", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("rolled_back_at", DateTime(timezone=True), nullable=True),
)

chunks = Table(
    "customer_import_chunks",
    import_metadata,
    Column("job_id", String(36), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

report = Table(
    "customer_import_rows",
    import_metadata,
    Column("job_id", String(36), primary_key=True),
    Column("row_no", Integer, primary_key=True),
    Column("status", String(20), nullable=False),
    Column("customer_id", String(36), nullable=True),
    Column("errors", Text, nullable=False),
    Column("duplicate_of", String(36), nullable=False),
    Column("duplicate_row", Integer, nullable=False),
    Column("note", String(200), nullable=False),
    Column("owner_id", String(64), nullable=False),
)

# The duplicate facts (file keys) of a dry run's rows that would import, so that its later batches find the earlier
# rows; a real import finds them through the customers they created (migration 0014).
keys = Table(
    "customer_import_keys",
    import_metadata,
    Column("job_id", String(36), primary_key=True),
    Column("key", String(120), primary_key=True),
    Column("row_no", Integer, nullable=False),
    Column("customer_id", String(36), nullable=False),
)

_REPORT_COLUMNS = tuple(c.name for c in report.c)
_FILE_KEY_COLUMNS = tuple(c.name for c in keys.c)
_OUTBOX_COLUMNS = ("id", "subject", "envelope", "created_at")

RECEIVING, QUEUED, RUNNING, FINISHED, ROLLED_BACK = "receiving", "queued", "running", "finished", "rolled_back"
IMPORTED, WOULD_IMPORT, FAILED, DUPLICATE, REMOVED, KEPT = (
    "imported",
    "would_import",
    "failed",
    "duplicate",
    "rolled_back",
    "kept",
)
CHUNK_BYTES = 1024 * 1024
_ROLLBACK_PAGE = 1000


@dataclass(frozen=True)
class ImportJob:
    """One import job as stored."""

    id: str
    status: str
    file_name: str
    format: ImportFormat
    file_sha256: str
    file_size: int
    encoding: str
    columns: tuple[str, ...]
    dry_run: bool
    distribution: Distribution
    distribution_team_id: str
    staff: tuple[Staff, ...]
    created_by: str
    creator: Identity
    branch_id: str
    team_id: str
    region: str
    total: int
    checkpoint_row: int
    processed: int
    imported: int
    failed: int
    duplicates: int
    rolled_back: int
    kept: int
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    rolled_back_at: dt.datetime | None

    @property
    def facts(self) -> FileFacts:
        """What inspecting the file found."""
        return FileFacts(self.encoding, self.columns, self.total)


@dataclass(frozen=True)
class PreparedBatch:
    """A batch's rows and their prepared forms, in file order."""

    rows: Sequence[SourceRow]
    items: list[PreparedRow]


@dataclass(frozen=True)
class DecidedBatch:
    """A batch decided — each row failed, duplicate or imported, with owner and customer number — and its rows built
    (:meth:`ImportStore.decide_batch`), to write in one transaction (:meth:`ImportStore.write_batch`)."""

    values: dict[str, Any]  # the job's checkpoint and counts once it is written
    report_rows: list[list[Any]]
    file_keys: list[tuple[Any, ...]]  # a dry run's keys of its rows that would import
    creates: tuple[list[tuple[Any, ...]], ...]  # customers, data keys, history and outbox rows
    keys: dict[str, tuple[int, str]]  # its rows' file keys → (row, customer id): the next batch's earlier rows

    @property
    def numbers(self) -> frozenset[str]:
        """The customer numbers it gives (the first column of its customer records)."""
        return frozenset(record[0] for record in self.creates[0])


@dataclass(frozen=True)
class ReportRow:
    """One row of a job's report."""

    row: int
    status: str
    customer_id: str
    errors: list[tuple[str, str]]
    duplicate_of: str
    duplicate_row: int
    note: str
    owner_id: str


def _job(m: Any) -> ImportJob:
    staff = tuple(Staff(**{**s, "roles": tuple(s.get("roles", ()))}) for s in json.loads(m["staff"]))
    creator = Identity(
        user_id=m["created_by"],
        roles=tuple(r for r in m["creator_roles"].split(",") if r),
        scope=Scope(m["creator_scope"] or "none"),
        branch_id=m["branch_id"],
        team_id=m["team_id"],
        region=m["region"],
        permissions=frozenset(p for p in m["creator_permissions"].split(",") if p),
    )
    return ImportJob(
        id=m["id"],
        status=m["status"],
        file_name=m["file_name"],
        format=ImportFormat(m["format"]),
        file_sha256=m["file_sha256"],
        file_size=m["file_size"],
        encoding=m["encoding"],
        columns=tuple(json.loads(m["columns"])),
        dry_run=m["dry_run"],
        distribution=Distribution(m["distribution"]),
        distribution_team_id=m["distribution_team_id"],
        staff=staff,
        created_by=m["created_by"],
        creator=creator,
        branch_id=m["branch_id"],
        team_id=m["team_id"],
        region=m["region"],
        total=m["total"],
        checkpoint_row=m["checkpoint_row"],
        processed=m["processed"],
        imported=m["imported"],
        failed=m["failed"],
        duplicates=m["duplicates"],
        rolled_back=m["rolled_back"],
        kept=m["kept"],
        created_at=as_utc(m["created_at"]),
        updated_at=as_utc(m["updated_at"]),
        finished_at=as_utc(m["finished_at"]) if m["finished_at"] is not None else None,
        rolled_back_at=as_utc(m["rolled_back_at"]) if m["rolled_back_at"] is not None else None,
    )


def _report_row(m: Any) -> ReportRow:
    return ReportRow(
        row=m["row_no"],
        status=m["status"],
        customer_id=m["customer_id"] or "",
        errors=[(e["field"], e["reason"]) for e in json.loads(m["errors"])],
        duplicate_of=m["duplicate_of"],
        duplicate_row=m["duplicate_row"],
        note=m["note"],
        owner_id=m["owner_id"],
    )


class Upload:
    """An upload in progress: appends the file's bytes as chunks and hashes them."""

    def __init__(self, store: ImportStore, job_id: str) -> None:
        self._store = store
        self.job_id = job_id
        self._digest = hashlib.sha256()
        self._buffer = bytearray()
        self._seq = 0
        self.size = 0

    async def write(self, data: bytes) -> None:
        """Add bytes (written to the database a chunk at a time)."""
        self._digest.update(data)
        self.size += len(data)
        self._buffer.extend(data)
        while len(self._buffer) >= CHUNK_BYTES:
            await self._flush(bytes(self._buffer[:CHUNK_BYTES]))
            del self._buffer[:CHUNK_BYTES]

    async def close(self) -> str:
        """Write what is left; return the file's SHA-256."""
        if self._buffer:
            await self._flush(bytes(self._buffer))
            self._buffer.clear()
        return self._digest.hexdigest()

    async def _flush(self, data: bytes) -> None:
        self._seq += 1
        async with self._store.sessions() as session, session.begin():
            await session.execute(insert(chunks).values(job_id=self.job_id, seq=self._seq, data=data))


class ImportStore:
    """Import jobs and their writes; every read of a job applies the caller's data scope."""

    def __init__(
        self,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        customers: CustomerStore,
        *,
        helper_process: bool = False,
    ) -> None:
        self._engine = engine
        self.sessions = sessions
        self._outbox = outbox
        self._customers = customers
        self._keyring = customers._keyring
        self.preparation = Preparation(
            RowPreparer(self._keyring), ImportHelper(self._keyring) if helper_process else None
        )
        self._postgres = is_postgres(engine)
        self._local_claims: set[str] = set()

    # Jobs

    @staticmethod
    def _scoped(identity: Identity) -> Any:
        j = jobs.c
        scope = scope_condition(identity, owner=j.created_by, team=j.team_id, branch=j.branch_id, region=j.region)
        return or_(j.created_by == identity.user_id, scope)

    async def begin_upload(
        self,
        identity: Identity,
        file_format: ImportFormat,
        file_name: str,
        dry_run: bool,
        plan: DistributionPlan,
        now: dt.datetime,
    ) -> Upload:
        """Record a new job receiving its file."""
        job_id = new_id()
        staff = [dataclasses.asdict(s) for s in plan.staff]
        async with self.sessions() as session, session.begin():
            await session.execute(
                insert(jobs).values(
                    id=job_id,
                    status=RECEIVING,
                    file_name=file_name,
                    format=file_format.value,
                    file_sha256="",
                    file_size=0,
                    encoding="",
                    columns="[]",
                    dry_run=dry_run,
                    distribution=plan.rule.value,
                    distribution_team_id=plan.team_id,
                    staff=json.dumps(staff, ensure_ascii=False),
                    created_by=identity.user_id,
                    creator_roles=",".join(identity.roles),
                    creator_scope=identity.scope.value,
                    creator_permissions=",".join(sorted(identity.permissions)),
                    branch_id=identity.branch_id,
                    team_id=identity.team_id,
                    region=identity.region,
                    total=0,
                    checkpoint_row=1,
                    processed=0,
                    imported=0,
                    failed=0,
                    duplicates=0,
                    rolled_back=0,
                    kept=0,
                    created_at=now,
                    updated_at=now,
                )
            )
        return Upload(self, job_id)

    def file(self, job_id: str) -> Any:
        """A callable opening the job's file as a stream of byte chunks from its start."""

        async def stream() -> AsyncIterator[bytes]:
            seq = 0
            while True:
                async with self.sessions() as session:
                    query = (
                        select(chunks.c.seq, chunks.c.data)
                        .where(chunks.c.job_id == job_id, chunks.c.seq > seq)
                        .order_by(chunks.c.seq)
                        .limit(2)
                    )
                    rows = (await session.execute(query)).all()
                if not rows:
                    return
                for row in rows:
                    seq = row.seq
                    yield bytes(row.data)

        return stream

    async def reusable(self, job_id: str, branch_id: str, sha256: str) -> ImportJob | None:
        """An earlier real (not dry-run) job of the branch that took the same file and was not rolled back."""
        j = jobs.c
        query = (
            select(jobs)
            .where(
                j.branch_id == branch_id,
                j.file_sha256 == sha256,
                j.id != job_id,
                j.dry_run.is_(False),
                j.status.in_((QUEUED, RUNNING, FINISHED)),
            )
            .order_by(j.created_at)
            .limit(1)
        )
        async with self.sessions() as session:
            row = (await session.execute(query)).first()
        return _job(row._mapping) if row is not None else None

    async def discard(self, job_id: str) -> None:
        """Forget a job that never started (its file refused, or the same file imported before)."""
        async with self.sessions() as session, session.begin():
            await session.execute(delete(chunks).where(chunks.c.job_id == job_id))
            await session.execute(delete(jobs).where(jobs.c.id == job_id))

    async def queue(self, job_id: str, sha256: str, size: int, facts: FileFacts, now: dt.datetime) -> ImportJob:
        """The file is in and accepted: the job waits for the worker."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(
                    status=QUEUED,
                    file_sha256=sha256,
                    file_size=size,
                    encoding=facts.encoding,
                    columns=json.dumps(list(facts.columns)),
                    total=facts.total,
                    updated_at=now,
                )
            )
            row = (await session.execute(select(jobs).where(jobs.c.id == job_id))).one()
        return _job(row._mapping)

    async def get(self, identity: Identity, job_id: str) -> ImportJob:
        """A job the caller created or whose creator lies in the caller's scope; :class:`NotFound` otherwise."""
        query = select(jobs).where(jobs.c.id == job_id, jobs.c.status != RECEIVING, self._scoped(identity))
        async with self.sessions() as session:
            row = (await session.execute(query)).first()
        if row is None:
            raise NotFound(f"import {job_id} not found")
        return _job(row._mapping)

    async def load(self, job_id: str) -> ImportJob | None:
        """A job by id, unscoped (the worker's own read)."""
        async with self.sessions() as session:
            row = (await session.execute(select(jobs).where(jobs.c.id == job_id))).first()
        return _job(row._mapping) if row is not None else None

    async def rows(
        self, identity: Identity, job_id: str, after_row: int, limit: int, status: str = ""
    ) -> tuple[list[ReportRow], int]:
        """A page of the report after row ``after_row`` and the row to continue after (0 at the end)."""
        await self.get(identity, job_id)
        r = report.c
        query = select(report).where(r.job_id == job_id, r.row_no > after_row)
        if status:
            query = query.where(r.status == status)
        async with self.sessions() as session:
            found = (await session.execute(query.order_by(r.row_no).limit(limit + 1))).all()
        page = [_report_row(x._mapping) for x in found[:limit]]
        return page, (page[-1].row if len(found) > limit else 0)

    async def unfinished(self) -> list[str]:
        """Jobs waiting or interrupted, oldest first (what a starting worker resumes)."""
        query = select(jobs.c.id).where(jobs.c.status.in_((QUEUED, RUNNING))).order_by(jobs.c.created_at)
        async with self.sessions() as session:
            return [r.id for r in (await session.execute(query)).all()]

    async def forget_abandoned_uploads(self, older_than: dt.datetime) -> int:
        """Drop uploads cut off mid-way (the client went away or the process died while receiving)."""
        async with self.sessions() as session, session.begin():
            stale = [
                r.id
                for r in (
                    await session.execute(
                        select(jobs.c.id).where(jobs.c.status == RECEIVING, jobs.c.updated_at < older_than)
                    )
                ).all()
            ]
            if stale:
                await session.execute(delete(chunks).where(chunks.c.job_id.in_(stale)))
                await session.execute(delete(jobs).where(jobs.c.id.in_(stale)))
        return len(stale)

    @contextlib.asynccontextmanager
    async def claim(self, job_id: str) -> AsyncIterator[bool]:
        """Hold the job for this process while the block runs; yields False when another holds it.

        PostgreSQL: a session advisory lock on a connection of its own, released when the block ends or the
        process dies. SQLite (one process by design): a claim in memory.
        """
        if not self._postgres:
            if job_id in self._local_claims:
                yield False
                return
            self._local_claims.add(job_id)
            try:
                yield True
            finally:
                self._local_claims.discard(job_id)
            return
        lock_key = int.from_bytes(hashlib.sha256(f"crm-import:{job_id}".encode()).digest()[:8], "big", signed=True)
        async with self._engine.connect() as conn:
            got = bool((await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key})).scalar())
            await conn.commit()
            try:
                yield got
            finally:
                if got:
                    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key})
                    await conn.commit()

    async def start(self, job_id: str, now: dt.datetime) -> None:
        """Mark a queued job running."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(jobs).where(jobs.c.id == job_id, jobs.c.status == QUEUED).values(status=RUNNING, updated_at=now)
            )

    # The hot path

    async def prepare_batch(self, job: ImportJob, rows: Sequence[SourceRow], now: dt.datetime) -> PreparedBatch:
        """The CPU work of a batch that needs no database: validation, lookup hashes and, for each valid row,
        its data key, encrypted columns and records ready to write (:mod:`crm_customer.store.import_prepare`:
        here, or in the helper process for a large job). The worker prepares a batch while the ones before it are
        decided (:meth:`decide_batch`) and written (:meth:`write_batch`)."""
        context = BatchContext(job.dry_run, now, job.branch_id, job.region, job.created_by, f"import {job.id}")
        items = await self.preparation.prepare_rows(context, rows, job.total)
        return PreparedBatch(rows, items)

    async def apply_batch(
        self, job: ImportJob, batch: PreparedBatch, plan: DistributionPlan, now: dt.datetime
    ) -> ImportJob:
        """De-duplicate, distribute and write one prepared batch of rows with the job's new checkpoint
        (:meth:`decide_batch`, then :meth:`write_batch`)."""
        return await self.write_batch(job, await self.decide_batch(job, batch, plan, now))

    async def decide_batch(
        self,
        job: ImportJob,
        batch: PreparedBatch,
        plan: DistributionPlan,
        now: dt.datetime,
        before: DecidedBatch | None = None,
    ) -> DecidedBatch:
        """Decide each row of a prepared batch — failed, duplicate (of which customer or row), or imported (with
        which owner and customer number) — and build its rows to write. Reads only.

        ``before`` is the batch decided before this one when it may not have committed yet (the worker writes it
        meanwhile): its rows are this batch's earlier rows of the file too, its numbers are taken, and this batch
        goes on from the job as ``before`` leaves it (``job`` is the job before it).
        """
        if before is not None:
            job = dataclasses.replace(job, **before.values)
        valid = [item for item in batch.items if item.valid]
        async with self.sessions() as session:
            lookups = {fact: hashes for item in valid for fact, hashes in item.lookups}
            codes = {v for item in valid for f, v in item.facts if f == "credit_code"}
            existing = await self._existing(session, lookups, codes)
            # The file's earlier batches: the one before, from memory; older ones through the customers they
            # created (among the holders above), or, for a dry run, which created none, through its keys.
            in_file = dict(before.keys) if before is not None else {}
            ours: dict[str, int] = {}
            if job.dry_run:
                file_keys = list({k for item in valid for k in item.file_keys})
                in_file.update(await self._in_file(session, job.id, file_keys))
            else:
                ours = await self._created_by_job(session, job.id, list({h.id for h in existing.values()}))
            taken = before.numbers if before is not None else frozenset()
            numbers = await self._customer_numbers(session, now, 0 if job.dry_run else len(valid), taken)

        out_rows: list[list[Any]] = []
        new_keys: list[tuple[Any, ...]] = []
        creates: list[tuple[PreparedRow, str, str, str]] = []  # (row, number, owner, team)
        seen: dict[str, tuple[int, str]] = {}
        counts = {IMPORTED: 0, FAILED: 0, DUPLICATE: 0}
        imported_before = job.imported
        for index, item in enumerate(batch.items):
            if index and index % SLICE == 0:
                await asyncio.sleep(0)  # CPU work: let the batch being written and progress reads run between slices
            row_no = item.row
            # job_id, row_no, status, customer_id, errors, duplicate_of, duplicate_row, note, owner_id
            entry = [job.id, row_no, FAILED, None, "[]", "", 0, "", ""]
            out_rows.append(entry)
            if item.errors:
                entry[4] = _errors(item.errors)
                counts[FAILED] += 1
                continue
            duplicate = self._duplicate(job, item, seen, in_file, existing, ours)
            if duplicate is not None:
                entry[2], entry[5], entry[6], entry[7] = DUPLICATE, *duplicate
                counts[DUPLICATE] += 1
                continue
            owner = plan.owner_for(imported_before, item.owner_cell)
            if not isinstance(owner, tuple):
                entry[4] = _errors([(owner.field, owner.description)])
                counts[FAILED] += 1
                continue
            imported_before += 1
            counts[IMPORTED] += 1
            entry[2], entry[8] = (WOULD_IMPORT if job.dry_run else IMPORTED), owner[0]
            if not job.dry_run:
                entry[3] = item.customer_id
                creates.append((item, numbers.pop(), *owner))
            for key in item.file_keys:
                seen[key] = (row_no, item.customer_id)
                if job.dry_run:
                    new_keys.append((job.id, key, row_no, item.customer_id))
        rows = batch.rows
        values = {
            "checkpoint_row": rows[-1].row if rows else job.checkpoint_row,
            "processed": job.processed + len(rows),
            "imported": job.imported + counts[IMPORTED],
            "failed": job.failed + counts[FAILED],
            "duplicates": job.duplicates + counts[DUPLICATE],
            "updated_at": now,
        }
        return DecidedBatch(
            values=values,
            report_rows=out_rows,
            file_keys=new_keys,
            creates=await self._created_rows(job, creates, now),
            keys=seen,
        )

    async def write_batch(self, job: ImportJob, decided: DecidedBatch) -> ImportJob:
        """Write a decided batch in one transaction with the job's new checkpoint; return the job as it leaves it.

        Raises :class:`Conflict` when the job's checkpoint moved meanwhile (another worker did this batch), and
        ``IntegrityError`` when a single create took one of its ID numbers, mobiles or customer numbers since it
        was decided (decided again, the batch sees that customer as a duplicate).
        """
        customer_rows, key_rows, history_rows, event_rows = decided.creates
        async with self.sessions() as session, session.begin():
            j = jobs.c
            guarded = await session.execute(
                update(jobs)
                .where(j.id == job.id, j.checkpoint_row == job.checkpoint_row, j.status == RUNNING)
                .values(updated_at=decided.values["updated_at"])
            )
            if guarded.rowcount != 1:  # type: ignore[attr-defined]
                raise Conflict(f"import {job.id} moved on meanwhile")
            await self._bulk(session, customer_keys, KEY_COLUMNS, key_rows)
            await self._bulk(session, customers, CUSTOMER_COLUMNS, customer_rows)
            await self._bulk(session, customer_history, HISTORY_COLUMNS, history_rows)
            # Straight into the outbox table (a per-event Outbox.add is too slow here); handed to the relay after
            # the commit.
            await self._bulk(session, outbox_table, _OUTBOX_COLUMNS, event_rows)
            await self._bulk(session, report, _REPORT_COLUMNS, decided.report_rows)
            await self._bulk(session, keys, _FILE_KEY_COLUMNS, decided.file_keys)
            await session.execute(update(jobs).where(j.id == job.id).values(**decided.values))
        self._outbox.handed_over(_pending(event_rows))  # committed: publish now, not at the relay's next scan
        return dataclasses.replace(job, **decided.values)

    def _duplicate(
        self,
        job: ImportJob,
        item: PreparedRow,
        seen: dict[str, tuple[int, str]],
        in_file: dict[str, tuple[int, str]],
        existing: dict[tuple[str, str], _Holder],
        ours: dict[str, int],
    ) -> tuple[str, int, str] | None:
        """What a valid row duplicates — (customer, row of the file or 0, note) — or ``None``: an earlier row of the
        file first (of this batch in ``seen``; of earlier ones in ``in_file`` for a dry run, else among the holders
        of its facts, the customers the job created: ``ours``, their rows), then the database."""
        for key in item.file_keys:
            earlier = seen.get(key) or in_file.get(key)
            if earlier is not None:
                field = key.split(":", 1)[0]
                return earlier[1], earlier[0], f"same {field} as row {earlier[0]}"
        for field, value in item.facts:
            match = existing.get((field, value))
            if match is not None and match.id in ours:
                return match.id, ours[match.id], f"same {field} as row {ours[match.id]}"
        for field, value in item.facts:
            match = existing.get((field, value))
            if match is not None:
                visible = in_scope(
                    job.creator, owner=match.owner_id, team=match.team_id, branch=match.branch_id, region=match.region
                )
                note = f"same {field} as an existing customer" + ("" if visible else " outside your scope")
                return (match.id if visible else ""), 0, note
        return None

    async def refresh_statistics(self, job: ImportJob) -> None:
        """After a job that added :data:`ANALYZE_AFTER_ROWS` customers or more, refresh PostgreSQL's statistics of
        the tables it grew. The import's own look-ups do not need them (index probes whatever the statistics, see
        :func:`_probe_sql`; analysing as the job went cost 13 µs of PostgreSQL's CPU per row), but the lists and
        searches after it do, and autovacuum may not have noticed the growth yet. A failure is only logged."""
        if not self._postgres or job.dry_run or job.imported < ANALYZE_AFTER_ROWS:
            return
        try:
            async with self._engine.connect() as conn:
                await conn.execute(text("ANALYZE customers, customer_import_rows"))
                await conn.commit()
        except Exception as exc:  # noqa: BLE001 - statistics are an optimisation; autovacuum refreshes them too
            log.warning(
                "refreshing statistics after an import failed",
                extra={"import_id": job.id, "error": describe_error(exc)},
            )

    def _among(self, column: Any, values: Sequence[str]) -> Any:
        """``column IN values``; on PostgreSQL ``= ANY(array)``: one parameter, however many values (an IN list
        of a batch's thousands of values costs more to compile than to run)."""
        if self._postgres:
            return column == any_(bindparam(None, list(values), type_=ARRAY(String)))
        return column.in_(values)

    async def _probe(
        self,
        session: AsyncSession,
        table: Table,
        column: str,
        values: Sequence[str],
        wanted: tuple[str, ...],
        *,
        job_id: str | None = None,
        live: bool = False,
    ) -> list[Sequence[Any]]:
        """The ``wanted`` columns of a row of ``table`` whose ``column`` holds each of ``values`` (of the job's rows
        only, or of live rows only, when asked).

        PostgreSQL: one statement for the whole batch on the session's asyncpg connection, each value probing the
        column's index (:func:`_probe_sql`). Elsewhere: a query per :data:`LOOKUP_PART` values.
        """
        if not values:
            return []
        if self._postgres:
            sql = _probe_sql(table.name, column, wanted, job_id is not None, live)
            args = [job_id, list(values)] if job_id is not None else [list(values)]
            return list(await (await driver_of(await session.connection())).fetch(sql, *args))
        t = table.c
        rows: list[Sequence[Any]] = []
        for part in _parts(values):
            query = select(*(t[name] for name in wanted)).where(t[column].in_(part))
            if job_id is not None:
                query = query.where(t.job_id == job_id)
            if live:
                query = query.where(t.erased_at.is_(None))
            rows.extend((await session.execute(query)).all())
        return rows

    async def _in_file(self, session: AsyncSession, job_id: str, wanted: list[str]) -> dict[str, tuple[int, str]]:
        """The earlier rows of the job's file holding each of the file keys ``wanted``: (row, customer id)."""
        found = await self._probe(session, keys, "key", wanted, ("key", "row_no", "customer_id"), job_id=job_id)
        return {key: (row_no, customer_id) for key, row_no, customer_id in found}

    async def _created_by_job(self, session: AsyncSession, job_id: str, customer_ids: list[str]) -> dict[str, int]:
        """Which of ``customer_ids`` the job created: their rows of the file, by customer."""
        wanted = ("customer_id", "row_no")
        found = await self._probe(session, report, "customer_id", customer_ids, wanted, job_id=job_id)
        return {customer_id: row_no for customer_id, row_no in found}

    async def _existing(
        self, session: AsyncSession, lookups: dict[tuple[str, str], Sequence[str]], codes: set[str]
    ) -> dict[tuple[str, str], _Holder]:
        """Live customers holding any of the facts — ID numbers and mobiles by their lookup hashes under every
        key, credit codes as they are — by fact."""
        by_hash = {h: fact for fact, hashes in lookups.items() for h in hashes}
        ids = [h for h, (f, _) in by_hash.items() if f == "id_number"]
        mobiles = [h for h, (f, _) in by_hash.items() if f == "mobile"]
        found: dict[tuple[str, str], _Holder] = {}
        # One look-up per fact, each on its fact's unique index: for an OR of the three, or "= ANY" of a batch's
        # values, PostgreSQL costs a sequential scan of the table as cheaper once it outgrew its statistics — a
        # batch's check then grew with the table (0.1 s to 4 s over 60,000 customers).
        for column, values in (("id_number_hash", ids), ("mobile_hash", mobiles), ("credit_code", sorted(codes))):
            for row in await self._probe(session, customers, column, values, _Holder._fields, live=True):
                holder = _Holder(*row)
                for h in (holder.id_number_hash, holder.mobile_hash):
                    if h in by_hash:
                        found.setdefault(by_hash[h], holder)
                if holder.credit_code and holder.credit_code in codes:
                    found.setdefault(("credit_code", holder.credit_code), holder)
        return found

    async def _customer_numbers(
        self, session: AsyncSession, now: dt.datetime, count: int, excluded: frozenset[str] = frozenset()
    ) -> list[str]:
        """``count`` new customer numbers, none of them ``excluded`` (given by a batch not committed yet) or in the
        table (at import volumes random clashes are certain)."""
        numbers: set[str] = set()
        while len(numbers) < count:
            fresh = set(new_customer_numbers(now, count - len(numbers))) - numbers - excluded
            in_table = await self._probe(session, customers, "customer_no", list(fresh), ("customer_no",))
            numbers |= fresh - {number for (number,) in in_table}
        return list(numbers)

    async def _created_rows(
        self, job: ImportJob, creates: list[tuple[PreparedRow, str, str, str]], now: dt.datetime
    ) -> tuple[list[tuple[Any, ...]], ...]:
        """The customers, data keys, history rows and outbox rows of a batch's imported rows: its
        ``customer.created`` events go in bundles (:func:`crm_platform.outbox.bundle_rows`), one outbox row to
        insert and to mark sent per thousand events instead of one each (measured: 14 µs of PostgreSQL's CPU per
        event for the row and its mark). They come prepared (:class:`PreparedRow`): here each customer gets its
        number and owner."""
        customer_rows, key_rows, history_rows, created = [], [], [], []
        envelopes = _Envelopes(events.CUSTOMER_CREATED, self._outbox.source, job.created_by, now)
        event_ids = new_ids(len(creates))
        for index, (item, number, owner_id, team_id) in enumerate(creates):
            if index and index % SLICE == 0:
                await asyncio.sleep(0)
            customer_rows.append((number, owner_id, team_id, *item.customer))
            key_rows.append(item.key)
            history_rows.append(item.history)
            payload = events.with_ownership(item.created, owner_id, team_id)
            created.append(envelopes.event(item.customer_id, events.CUSTOMER_CREATED_TYPE, payload, event_ids[index]))
        event_rows = [(*bundle, now) for bundle in bundle_rows(created)]
        return customer_rows, key_rows, history_rows, event_rows

    async def _bulk(
        self, session: AsyncSession, table: Table, columns: Sequence[str], records: Sequence[Sequence[Any]]
    ) -> None:
        """Insert ``records`` (values of ``columns``, in that order) into ``table`` in the session's transaction:
        COPY on PostgreSQL."""
        if not records:
            return
        if not self._postgres:
            await session.execute(insert(table), [dict(zip(columns, record, strict=True)) for record in records])
            return
        driver = await driver_of(await session.connection())
        with integrity_as_sqlalchemy(f"COPY {table.name}"):  # as the session's insert raises it, on SQLite
            await driver.copy_records_to_table(table.name, records=records, columns=list(columns))

    async def finish(self, job: ImportJob, now: dt.datetime) -> ImportJob:
        """Close a job whose rows are all done: drop its file and keys, publish ``import.imported``."""
        async with self.sessions() as session, session.begin():
            j = jobs.c
            result = await session.execute(
                update(jobs)
                .where(j.id == job.id, j.status == RUNNING, j.checkpoint_row == job.checkpoint_row)
                .values(status=FINISHED, finished_at=now, updated_at=now)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise Conflict(f"import {job.id} moved on meanwhile")
            await session.execute(delete(keys).where(keys.c.job_id == job.id))
            await session.execute(delete(chunks).where(chunks.c.job_id == job.id))
            if not job.dry_run:
                await self._outbox.add(
                    session,
                    IMPORTED_EVENT,
                    import_service_pb2.CustomersImported(
                        import_id=job.id,
                        branch_id=job.branch_id,
                        created_by=job.created_by,
                        total=job.total,
                        imported=job.imported,
                        failed=job.failed,
                        duplicates=job.duplicates,
                    ),
                    subject_id=job.id,
                    actor=job.created_by,
                )
        return dataclasses.replace(job, status=FINISHED, finished_at=now, updated_at=now)

    # Rollback

    async def rollback(
        self, identity: Identity, job_id: str, reason: str, now: dt.datetime
    ) -> tuple[ImportJob, list[ReportRow]]:
        """Remove the job's customers nobody changed since, in one transaction; return the job and the kept rows."""
        job = await self.get(identity, job_id)
        if job.dry_run:
            raise FailedPrecondition("a dry run created nothing to roll back", reason="DRY_RUN")
        if job.status == ROLLED_BACK:
            raise FailedPrecondition(f"import {job_id} is rolled back already", reason="ROLLED_BACK")
        if job.status != FINISHED:
            raise FailedPrecondition(
                f"import {job_id} is still {job.status}; roll back when it finished", reason="NOT_FINISHED"
            )
        r, c = report.c, customers.c
        kept: list[ReportRow] = []
        removed_ids: list[str] = []
        erasures: list[PendingEvent] = []
        touched_columns = [c.version, c.created_at, c.updated_at, c.erased_at, c.aum, c.product_count]
        if "last_contact_at" in c:
            touched_columns.append(c["last_contact_at"])
        async with self.sessions() as session, session.begin():
            j = jobs.c
            guarded = await session.execute(
                update(jobs).where(j.id == job.id, j.status == FINISHED).values(status=ROLLED_BACK, updated_at=now)
            )
            if guarded.rowcount != 1:  # type: ignore[attr-defined]
                raise Conflict(f"import {job_id} changed meanwhile")
            after = 0
            while True:
                page = (
                    await session.execute(
                        select(r.row_no, r.customer_id, c.id.label("live_id"), *touched_columns)
                        .select_from(report.outerjoin(customers, c.id == r.customer_id))
                        .where(r.job_id == job.id, r.status == IMPORTED, r.row_no > after)
                        .order_by(r.row_no)
                        .limit(_ROLLBACK_PAGE)
                    )
                ).all()
                if not page:
                    break
                after = page[-1].row_no
                ids = [p.customer_id for p in page if p.live_id is not None]
                tagged = await self._with(session, customer_tags, ids)
                holding = await self._with(session, customer_holdings, ids)
                removable, notes = [], {}
                for p in page:
                    why = self._kept_because(p, tagged, holding)
                    if why:
                        notes[p.row_no] = why
                    else:
                        removable.append(p.customer_id)
                deleted: set[str] = set()
                if removable:
                    result = await session.execute(
                        delete(customers)
                        .where(self._among(c.id, removable), c.version == 1, c.updated_at == c.created_at)
                        .returning(c.id)
                    )
                    deleted = {x.id for x in result.all()}
                    gone = list(deleted)
                    if gone:
                        await session.execute(
                            delete(customer_keys).where(self._among(customer_keys.c.customer_id, gone))
                        )
                        await session.execute(
                            delete(customer_history).where(self._among(customer_history.c.customer_id, gone))
                        )
                for p in page:
                    if p.customer_id in deleted:
                        removed_ids.append(p.customer_id)
                        continue
                    note = notes.get(p.row_no) or "changed meanwhile"
                    kept.append(ReportRow(p.row_no, KEPT, p.customer_id, [], "", 0, note, ""))
                if deleted:
                    await session.execute(
                        update(report)
                        .where(r.job_id == job.id, self._among(r.customer_id, list(deleted)))
                        .values(status=REMOVED, note="rolled back")
                    )
                    erased = _Envelopes(events.CUSTOMER_ERASED, self._outbox.source, identity.user_id, now)
                    event_rows = [
                        erased.row(x, events.customer_erased(_stub(x, job.branch_id), removed=True)) for x in deleted
                    ]
                    await self._bulk(session, outbox_table, _OUTBOX_COLUMNS, event_rows)
                    erasures.extend(_pending(event_rows))
            for row in kept:
                await session.execute(
                    update(report)
                    .where(r.job_id == job.id, r.row_no == row.row)
                    .values(status=KEPT, note=row.note[:200])
                )
            values = {"rolled_back": len(removed_ids), "kept": len(kept), "rolled_back_at": now, "updated_at": now}
            await session.execute(update(jobs).where(j.id == job.id).values(**values))
            await self._outbox.add(
                session,
                ROLLED_BACK_EVENT,
                import_service_pb2.ImportRolledBack(
                    import_id=job.id,
                    branch_id=job.branch_id,
                    actor=identity.user_id,
                    removed=len(removed_ids),
                    kept=len(kept),
                    removed_customer_ids=removed_ids[:10000],
                ),
                subject_id=job.id,
                actor=identity.user_id,
            )
        self._outbox.handed_over(erasures)  # committed: publish now rather than at the relay's next table scan
        log.info(
            "import rolled back",
            extra={"import_id": job.id, "removed": len(removed_ids), "kept": len(kept), "reason": reason},
        )
        return dataclasses.replace(job, status=ROLLED_BACK, **values), kept

    async def _with(self, session: AsyncSession, table: Table, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        query = select(table.c.customer_id).where(self._among(table.c.customer_id, ids)).distinct()
        return {x.customer_id for x in (await session.execute(query)).all()}

    @staticmethod
    def _kept_because(p: Any, tagged: set[str], holding: set[str]) -> str:
        if p.live_id is None:
            return "no longer exists"
        why = untouched(p.version, as_utc(p.created_at), as_utc(p.updated_at), p.erased_at is not None)
        if why:
            return why
        if p.customer_id in tagged:
            return "tagged since the import"
        if p.customer_id in holding or p.product_count or p.aum:
            return "has holdings since the import"
        if getattr(p, "last_contact_at", None) is not None:
            return "contacted since the import"
        return ""


class _Envelopes:
    """Envelopes of one batch's events: what they share (time, trace context, source) serialized once.

    An envelope is those shared fields followed by its own (id, subject, payload), written as protobuf's wire
    format directly: a parser reads the concatenation as the one message (fields may come in any order), and
    building and serializing a message per event cost three times as much (an import writes one per row).
    """

    def __init__(self, subject: str, source: str, actor: str, now: dt.datetime) -> None:
        shared = make_envelope(subject, source, empty_pb2.Empty(), subject_id="", actor=actor)
        for own in ("id", "payload"):
            shared.ClearField(own)
        self._shared = shared.SerializeToString()
        self._subject = subject
        self._now = now

    def row(self, subject_id: str, message: Message) -> tuple[Any, ...]:
        """The outbox row (values of :data:`_OUTBOX_COLUMNS`) of one event about ``subject_id``."""
        return self.packed_row(subject_id, message.DESCRIPTOR.full_name, message.SerializeToString())

    def packed_row(self, subject_id: str, type_name: str, payload: bytes, event_id: str = "") -> tuple[Any, ...]:
        """:meth:`row` of a payload already serialized: a message of type ``type_name``; its id ``event_id``, else
        a new one."""
        return (*self.event(subject_id, type_name, payload, event_id), self._now)

    def event(self, subject_id: str, type_name: str, payload: bytes, event_id: str = "") -> PendingEvent:
        """The event of :meth:`packed_row`, to write in a bundle (:func:`crm_platform.outbox.bundle_rows`)."""
        event_id = event_id or new_id()
        packed = _wire_text(_ANY_TYPE_URL, f"{TYPE_URL_PREFIX}{type_name}") + _wire_bytes(_ANY_VALUE, payload)
        envelope = b"".join(
            (
                self._shared,
                _wire_text(_ENVELOPE_ID, event_id),
                _wire_text(_ENVELOPE_SUBJECT_ID, subject_id),
                _wire_bytes(_ENVELOPE_PAYLOAD, packed),
            )
        )
        return PendingEvent(event_id, self._subject, envelope)


_FIELDS = envelope_pb2.EventEnvelope.DESCRIPTOR.fields_by_name
_ENVELOPE_ID, _ENVELOPE_SUBJECT_ID, _ENVELOPE_PAYLOAD = (_FIELDS[n].number for n in ("id", "subject_id", "payload"))
_ANY_TYPE_URL, _ANY_VALUE = (any_pb2.Any.DESCRIPTOR.fields_by_name[n].number for n in ("type_url", "value"))


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _wire_bytes(number: int, data: bytes) -> bytes:
    """A length-delimited field (string, bytes or message) in protobuf's wire format; nothing when empty, as
    proto3 serializes an empty value."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data if data else b""


def _wire_text(number: int, text: str) -> bytes:
    return _wire_bytes(number, text.encode())


LOOKUP_PART = 100
ANALYZE_AFTER_ROWS = 10_000  # customers a job adds before it refreshes the statistics when it finishes


def _parts(values: Sequence[str]) -> list[Sequence[str]]:
    """``values`` in parts of :data:`LOOKUP_PART` (an index lookup each; see :meth:`ImportStore._existing`)."""
    return [values[i : i + LOOKUP_PART] for i in range(0, len(values), LOOKUP_PART)]


class _Holder(NamedTuple):
    """A live customer holding a fact an imported row has (:meth:`ImportStore._existing`)."""

    id: str
    owner_id: str
    team_id: str
    branch_id: str
    region: str
    id_number_hash: str | None
    mobile_hash: str | None
    credit_code: str | None


@functools.cache
def _probe_sql(table: str, column: str, wanted: tuple[str, ...], by_job: bool, live: bool) -> str:
    """The PostgreSQL statement of :meth:`ImportStore._probe`: the batch's values unnested, each probing ``column``
    in a ``LATERAL`` subquery with ``LIMIT 1``. That form cannot be turned into a hash join, and an equality on a
    unique index is planned as one row whatever the statistics say, so the look-up stays an index probe per value
    however stale the statistics of a table an import grows tenfold."""
    conditions = [f"{column} = v.value", *(["job_id = $1"] if by_job else []), *(["erased_at IS NULL"] if live else [])]
    return (
        f"SELECT f.* FROM unnest(${2 if by_job else 1}::varchar[]) AS v(value) CROSS JOIN LATERAL"
        f" (SELECT {', '.join(wanted)} FROM {table} WHERE {' AND '.join(conditions)} LIMIT 1) AS f"
    )


def _pending(event_rows: list[tuple[Any, ...]]) -> list[PendingEvent]:
    """The outbox rows of :class:`_Envelopes`, as the relay takes them once their transaction committed."""
    return [PendingEvent(event_id, subject, envelope) for event_id, subject, envelope, _ in event_rows]


def _errors(items: list[tuple[str, str]]) -> str:
    return json.dumps([{"field": f, "reason": reason} for f, reason in items], ensure_ascii=False)


def _stub(customer_id: str, branch_id: str) -> Customer:
    """A customer carrying only its id and branch (what the ``customer.erased`` payload needs)."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return Customer(
        customer_id, "", CustomerKind.INDIVIDUAL, Profile(name=""), "", "", branch_id, "", 0, "", epoch, epoch
    )
