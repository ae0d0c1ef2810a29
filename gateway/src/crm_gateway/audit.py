"""The audit trail: every state-changing call and every reveal, append-only and hash-chained.

Each record's hash covers its fields and the previous record's hash, so editing, deleting or inserting a
row anywhere breaks the chain from that point; :func:`verify` finds the first broken record. The database
refuses UPDATE and DELETE on the table (triggers), and a unique index on ``prev_hash`` keeps the chain from
forking when several gateway replicas append.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_platform.fastread import read_pool_for
from crm_platform.outbox import utcnow
from crm_platform.validation import visible

GENESIS = "0" * 64

log = logging.getLogger(__name__)

AUDIT_WRITE_FAILURES = Counter(
    "crm_audit_write_failures",
    "Audit records that could not be written (the request they record was answered 503); alerts at the first.",
)
AUDIT_BATCH_FALLBACKS = Counter(
    "crm_audit_batch_fallbacks", "Audit batches refused whole and written again one record at a time."
)

metadata = MetaData()
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", String(32), nullable=False),
    Column("actor_id", String(64), nullable=False),
    Column("actor_roles", String(200), nullable=False),
    Column("action", String(16), nullable=False),
    Column("resource", String(500), nullable=False),
    Column("outcome", Integer, nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("client_addr", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

_HASHED = ("at", "actor_id", "actor_roles", "action", "resource", "outcome", "request_id", "client_addr", "detail")


def record_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and the record's fields in a canonical form."""
    canonical = json.dumps([prev_hash, *(fields[k] for k in _HASHED)], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _chained(prev: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` with their ``prev_hash`` and ``hash``, the first following ``prev``."""
    rows = []
    for fields in records:
        digest = record_hash(prev, fields)
        rows.append({**fields, "prev_hash": prev, "hash": digest})
        prev = digest
    return rows


_INSERTED = (*_HASHED, "prev_hash", "hash")
_HEAD_SQL = "SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1"
# One statement for a whole batch: a column array per field, rows inserted (and numbered) in the chain's order.
_INSERT_SQL = (
    f"INSERT INTO audit_log ({', '.join(_INSERTED)}) SELECT {', '.join(_INSERTED)} FROM unnest("
    + ", ".join(f"${i}::{'integer' if name == 'outcome' else 'text'}[]" for i, name in enumerate(_INSERTED, 1))
    + f") WITH ORDINALITY AS r({', '.join(_INSERTED)}, ord) ORDER BY ord RETURNING seq, hash"
)
_UNIQUE_VIOLATION = "23505"
_CONTENDED_ATTEMPTS = 20


@dataclass(frozen=True)
class AuditEntry:
    """What happened, by whom, with what outcome."""

    actor_id: str
    actor_roles: str
    action: str
    resource: str
    outcome: int
    request_id: str
    client_addr: str
    detail: dict[str, Any]


_Pending = tuple[dict[str, Any], "asyncio.Future[int]"]


def _done(batch: list[_Pending], seqs: list[int]) -> None:
    for (_, done), seq in zip(batch, seqs, strict=True):
        if not done.done():
            done.set_result(seq)


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    AUDIT_WRITE_FAILURES.inc(len(batch))
    for _, done in batch:
        if not done.done():
            done.set_exception(exc)


class AuditLog:
    """Appends to and reads the audit trail.

    Appends are group-committed: concurrent callers' records are chained and written together in one
    transaction by a single writer task, and each caller returns only once its record is committed. One
    commit per record would cap every state-changing route at the audit database's commit rate (tens per
    second on SQLite with fsync); a group commit keeps the same guarantee at a fraction of the cost.
    """

    max_batch = 500

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # PostgreSQL: the writer's own connection. Checking one out of SQLAlchemy's pool and back for every batch
        # (a batch holds two or three records at a few hundred creates a second) cost about as much gateway CPU
        # as writing the batch.
        self._pool = read_pool_for(engine, size=1, name="crm-gateway-audit")
        self._pool_open = False
        self._head: str | None = None  # PostgreSQL: the chain's last hash as this process last saw it
        self._pending: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None

    async def append(self, entry: AuditEntry) -> int:
        """Add one record at the end of the chain once it is committed; return its sequence number."""
        fields = {
            "at": utcnow().isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "actor_id": visible(entry.actor_id)[:64],
            "actor_roles": visible(entry.actor_roles)[:200],
            "action": visible(entry.action)[:16],
            "resource": visible(entry.resource)[:500],
            "outcome": entry.outcome,
            "request_id": visible(entry.request_id)[:64],
            "client_addr": visible(entry.client_addr)[:64],
            # JSON escapes the control characters PostgreSQL refuses itself; only an unpaired surrogate (which UTF-8
            # cannot encode) is left to replace, so the detail stays JSON the audit route can read back.
            "detail": json.dumps(entry.detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
            .encode("utf-8", "replace")
            .decode("utf-8"),
        }
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((fields, done))
        if self._writer is None or self._writer.done():
            # A task of its own, so a caller that is cancelled (client gone) never strands the others' records.
            self._writer = asyncio.create_task(self._write_pending(), name="audit-writer")
        return await asyncio.shield(done)

    async def close(self) -> None:
        """Wait until every record handed to :meth:`append` is written, then close the writer's connection."""
        while self._writer is not None and not self._writer.done():
            await self._writer
        if self._pool is not None:
            await self._pool.close()
            self._pool_open = False

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                seqs = await self._write(batch)
            except Exception as exc:  # noqa: BLE001 - see below: one refused record must not fail the others
                if len(batch) == 1:
                    _fail(batch, exc)
                    continue
                # The batch was refused whole: write its records one at a time, so only a record that cannot be
                # written fails, and only its own request.
                AUDIT_BATCH_FALLBACKS.inc()
                log.warning("audit batch refused; writing its records one by one", extra={"records": len(batch)})
                for item in batch:
                    try:
                        (seq,) = await self._write([item])
                    except Exception as one:  # noqa: BLE001 - reported to that record's caller
                        _fail([item], one)
                    else:
                        _done([item], [seq])
                continue
            _done(batch, seqs)

    async def _write(self, batch: list[_Pending]) -> list[int]:
        records = [fields for fields, _ in batch]
        append = self._append_postgres if self._pool is not None else self._append_sqlalchemy
        for _ in range(_CONTENDED_ATTEMPTS):
            seqs = await append(records)
            if seqs is not None:
                return seqs
        raise RuntimeError(f"audit chain still contended after {_CONTENDED_ATTEMPTS} attempts")

    async def _append_sqlalchemy(self, records: list[dict[str, Any]]) -> list[int] | None:
        """The batch chained to the head read in its transaction; ``None`` when another writer on the same
        database followed that head first (the unique index on ``prev_hash``)."""
        try:
            async with self._engine.begin() as conn:
                head = select(audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
                rows = _chained((await conn.execute(head)).scalar() or GENESIS, records)
                result = await conn.execute(insert(audit_log).returning(audit_log.c.seq, audit_log.c.hash), rows)
                by_hash = {row.hash: int(row.seq) for row in result}
        except IntegrityError:
            return None
        return [by_hash[row["hash"]] for row in rows]

    async def _append_postgres(self, records: list[dict[str, Any]]) -> list[int] | None:
        """The batch chained to the head this process last wrote or read, in one autocommit statement;
        ``None`` when that head was stale.

        Replicas append without a lock: the unique index on ``prev_hash`` refuses a record that follows a head
        another replica has already followed (ours was stale), and then we read the head and chain again.
        Five round trips per batch (``BEGIN``, a lock, the head, the insert, ``COMMIT``) became one.
        """
        assert self._pool is not None
        if not self._pool_open:
            await self._pool.open()
            self._pool_open = True
        if self._head is None:
            head = await self._pool.fetchrow(_HEAD_SQL, ())
            self._head = (head[0] if head is not None else None) or GENESIS
        rows = _chained(self._head, records)
        try:
            result = await self._pool.fetch(_INSERT_SQL, [[row[name] for row in rows] for name in _INSERTED])
        except Exception as exc:
            self._head = None  # stale (another replica appended) or, on any other error, unknown
            if getattr(exc, "sqlstate", None) == _UNIQUE_VIOLATION:
                return None
            raise
        self._head = rows[-1]["hash"]
        by_hash = {r["hash"]: int(r["seq"]) for r in result}
        return [by_hash[row["hash"]] for row in rows]

    async def query(
        self,
        *,
        actor: str | None,
        resource: str | None,
        since: str | None,
        until: str | None,
        after_seq: int,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Records matching the filters, oldest first, after ``after_seq``."""
        query = select(audit_log).where(audit_log.c.seq > after_seq)
        if actor:
            query = query.where(audit_log.c.actor_id == actor)
        if resource:
            query = query.where(audit_log.c.resource.startswith(resource, autoescape=True))
        if since:
            query = query.where(audit_log.c.at >= since)
        if until:
            query = query.where(audit_log.c.at < until)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(audit_log.c.seq).limit(limit))).all()
        return [dict(r._mapping) for r in rows]


async def verify(engine: AsyncEngine, batch: int = 5000) -> tuple[int, int | None]:
    """Walk the whole chain; return (records checked, first broken seq or None)."""
    prev = GENESIS
    checked = 0
    after = 0
    async with engine.connect() as conn:
        while True:
            rows = (
                await conn.execute(
                    select(audit_log).where(audit_log.c.seq > after).order_by(audit_log.c.seq).limit(batch)
                )
            ).all()
            if not rows:
                return checked, None
            for row in rows:
                m = row._mapping
                fields = {k: m[k] for k in _HASHED}
                if m["prev_hash"] != prev or record_hash(prev, fields) != m["hash"]:
                    return checked, int(m["seq"])
                prev = m["hash"]
                checked += 1
                after = m["seq"]
