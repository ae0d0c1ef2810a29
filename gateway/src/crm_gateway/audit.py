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
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_platform.fastread import read_pool_for
from crm_platform.outbox import utcnow

GENESIS = "0" * 64

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
        self._pending: list[tuple[dict[str, Any], asyncio.Future[int]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def append(self, entry: AuditEntry) -> int:
        """Add one record at the end of the chain once it is committed; return its sequence number."""
        fields = {
            "at": utcnow().isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "actor_id": entry.actor_id,
            "actor_roles": entry.actor_roles,
            "action": entry.action,
            "resource": entry.resource[:500],
            "outcome": entry.outcome,
            "request_id": entry.request_id,
            "client_addr": entry.client_addr,
            "detail": json.dumps(entry.detail, ensure_ascii=False, sort_keys=True, separators=(",", ":")),
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
            except Exception as exc:  # noqa: BLE001 - each waiting caller sees the failure; the next batch tries again
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), seq in zip(batch, seqs, strict=True):
                if not done.done():
                    done.set_result(seq)

    async def _write(self, batch: list[tuple[dict[str, Any], asyncio.Future[int]]]) -> list[int]:
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
