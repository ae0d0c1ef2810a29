"""The hottest write — creating one customer — as **one** statement on PostgreSQL.

Through the SQLAlchemy session a create took nine round trips to the database (the idempotency look-up,
``BEGIN``, a duplicate check per ID number and per mobile, the data key, the customer, its history row, its
outbox row, ``COMMIT``), each with statement compilation, parameter processing and a greenlet switch: profiled
at over half of the customer service's CPU per create (issue #4, "Performance"), with ``socket.send`` alone
at about a third of a millisecond per call on this machine.

Here the duplicate checks and the four inserts are one data-modifying ``WITH`` statement, run in autocommit
on a :class:`crm_platform.fastread.ReadPool` connection: PostgreSQL runs a single statement atomically, so the
customer, its key, its history and its event commit together or not at all, exactly as in the session's
transaction. The inserts run only when the ``dup`` part found nothing (``WHERE NOT EXISTS``); the statement
answers the rows ``dup`` found — none means created. Two concurrent creates of the same person both pass
``dup`` (one snapshot each); the unique indexes on the lookup hashes and the request id stop the second,
which then answers as the SQLAlchemy path does after its ``IntegrityError``.

The event row goes into the outbox table in the same statement and, once the statement returned, to the
relay's in-memory hand-over (:meth:`crm_platform.outbox.Outbox.handed_over`), so it is published at once
and the table scan remains the safety net, as for every other event.

The column values come from the store's own mapping (``CustomerStore.create_rows``), so both paths write the
same rows; the SQL is generated from the table definitions, so a column added there is written here too. On
SQLite :class:`CustomerWrites` uses the store's session path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from crm_customer import events
from crm_customer.domain import Customer, new_customer_no
from crm_customer.store import DUPLICATE_FIELDS, CustomerStore, duplicate_error
from crm_customer.store.tables import customer_history, customer_keys, customers
from crm_platform.auth_context import Identity
from crm_platform.errors import AlreadyExists
from crm_platform.fastread import ReadPool
from crm_platform.schema import outbox as outbox_table


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_FOUND = "id, owner_id, team_id, branch_id, region"
_NUMBER_ATTEMPTS = 5  # customer numbers tried before a clash is reported


def _create_sql() -> tuple[str, dict[str, list[str]]]:
    """The statement and, per table, the order of its columns' parameters (after the four ``dup`` ones)."""
    c = _quoted(customers.name)
    live = "erased_at IS NULL"  # CustomerStore's duplicate rule (a merged duplicate gave up its hashes)
    found = ", ".join(f"f.{name.strip()}" for name in _FOUND.split(","))

    def by_hash(field: str, column: str, param: str) -> str:
        # One equality look-up per hash (one per master key) on the column's unique index: an equality on a unique
        # index is estimated at one row whatever the statistics say, where "column = ANY($n)" gets a guess. The
        # generic plan of this prepared statement is made once per connection, often while the table is small
        # or has never been analysed (autovacuum off, a restore or a bulk load before its first ANALYZE), and
        # kept; with the guess it once read every live customer on each create (see migration 0012).
        return (
            f" UNION ALL (SELECT '{field}', {found} FROM unnest({param}::varchar[]) AS h(v) CROSS JOIN LATERAL"
            f" (SELECT {_FOUND} FROM {c} WHERE {column} = h.v AND {live} LIMIT 1) AS f LIMIT 1)"
        )

    dup = (
        f"(SELECT 'request_id' AS field, {_FOUND} FROM {c} WHERE request_id = $1 LIMIT 1)"
        + by_hash("id_number", "id_number_hash", "$2")
        + by_hash("mobile", "mobile_hash", "$3")
        + f" UNION ALL (SELECT 'credit_code', {_FOUND} FROM {c} WHERE credit_code = $4 AND {live} LIMIT 1)"
    )
    order: dict[str, list[str]] = {}
    parts = [f"WITH dup AS ({dup})"]
    number = 4
    for alias, table in (
        ("new_key", customer_keys),
        ("new_customer", customers),
        ("new_history", customer_history),
        ("new_event", outbox_table),
    ):
        names = [col.name for col in table.c if not (table is outbox_table and col.name == "published_at")]
        order[table.name] = names
        placeholders = []
        for col in table.c:
            if col.name not in names:
                continue
            number += 1
            # The column's type without length or precision: a cast to VARCHAR(n) would silently cut a longer
            # value, where the insert must fail as the session path's does.
            base = col.type.compile(dialect=_pg_dialect()).split("(", 1)[0]
            placeholders.append(f"${number}::{base}")
        parts.append(
            f", {alias} AS (INSERT INTO {_quoted(table.name)} ({', '.join(_quoted(n) for n in names)})"
            f" SELECT {', '.join(placeholders)} WHERE NOT EXISTS (SELECT 1 FROM dup))"
        )
    parts.append(" SELECT field, " + _FOUND + " FROM dup")
    return "".join(parts), order


def _pg_dialect() -> Any:
    from sqlalchemy.dialects import postgresql

    return postgresql.dialect()


class CustomerWrites:
    """``create`` one customer: one statement through asyncpg when a pool is given (PostgreSQL), else the
    SQLAlchemy store. Either way an earlier call with the same request id answers its customer (idempotency)."""

    def __init__(self, store: CustomerStore, pool: ReadPool | None) -> None:
        self._store = store
        self.pool = pool
        self._sql, self._order = _create_sql() if pool is not None else ("", {})

    async def create(self, identity: Identity, customer: Customer, request_id: str, fingerprint: str = "") -> Customer:
        """Create ``customer`` (:class:`AlreadyExists` naming an in-scope duplicate by ID number, mobile or
        credit code), or answer the customer an earlier call with ``request_id`` created — if that call's request
        had the same ``fingerprint`` (:class:`crm_platform.idempotency.IdempotencyKeyReused` otherwise). The
        fingerprint is written in the create's own statement: no round trip of its own.

        A customer number is random (:func:`crm_customer.domain.new_customer_no`); one already taken — rare, yet
        certain over enough creates in a day — gets the customer a fresh number instead of failing the call.
        """
        for attempt in range(1, _NUMBER_ATTEMPTS + 1):
            try:
                return await self._create_once(identity, customer, request_id, fingerprint)
            except Exception as exc:
                if attempt == _NUMBER_ATTEMPTS or "customer_no" not in str(exc):
                    raise
                customer = dataclasses.replace(customer, customer_no=new_customer_no(customer.created_at))
        raise AssertionError("unreachable")

    async def _create_once(self, identity: Identity, customer: Customer, request_id: str, fingerprint: str) -> Customer:
        if self.pool is None:
            if (
                request_id
                and (earlier := await self._store.find_by_request(identity, request_id, fingerprint)) is not None
            ):
                return earlier
            return await self._store.create(identity, customer, request_id, fingerprint)
        rows = self._store.create_rows(customer, request_id, fingerprint)
        event = self._store.outbox.prepare(
            events.CUSTOMER_CREATED,
            events.customer_created(customer),
            subject_id=customer.id,
            actor=customer.created_by,
        )
        rows[outbox_table.name] = {
            "id": event.id,
            "subject": event.subject,
            "envelope": event.envelope,
            "created_at": customer.created_at,
        }
        args: list[Any] = [request_id or None, *self._store.duplicate_keys(customer.profile)]
        for table in (customer_keys, customers, customer_history, outbox_table):
            values = rows[table.name]
            args.extend(values[name] for name in self._order[table.name])
        try:
            found = await self.pool.fetch(self._sql, args)
        except Exception as exc:
            if not _is_unique_violation(exc):
                raise
            # A concurrent create of the same person (or request) committed between our snapshot and our
            # insert: answer as if we had seen it first, by the session path's own rules.
            if (
                request_id
                and (earlier := await self._store.find_by_request(identity, request_id, fingerprint)) is not None
            ):
                return earlier
            await self._store.reject_duplicates(identity, customer.profile)
            raise
        if not found:
            self._store.outbox.handed_over([event])
            return customer
        return await self._answer_duplicate(identity, request_id, fingerprint, found)

    async def _answer_duplicate(
        self, identity: Identity, request_id: str, fingerprint: str, found: Sequence[Any]
    ) -> Customer:
        by_field = {row["field"]: row for row in found}
        if "request_id" in by_field:
            earlier = await self._store.find_by_request(identity, request_id, fingerprint)
            if earlier is not None:
                return earlier
        for field in DUPLICATE_FIELDS:
            if field in by_field:
                raise duplicate_error(identity, field, by_field[field])
        # Only an out-of-scope request id matched: another caller's key. Not ours to answer, nor to reuse.
        raise AlreadyExists("this request id was used for another customer", reason="DUPLICATE_REQUEST")


def _is_unique_violation(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) == "23505"
