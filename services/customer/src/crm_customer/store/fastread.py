"""The hottest read — one customer by id, in the caller's scope — straight through asyncpg on PostgreSQL.

``GET /api/v1/customers/{id}`` is the gateway's most frequent call. Through the SQLAlchemy session it cost two
statements (the customer joined with its wrapped key, then its tags), an implicit ``BEGIN`` and ``ROLLBACK``,
statement compilation and cache keys, and a greenlet switch per step: profiled at well over half the customer
service's CPU per request (issue #3, "Performance"). Here it is **one** prepared statement on a
:class:`crm_platform.fastread.ReadPool` — the row, its wrapped data key and its tags (an ``ARRAY`` sub-select) —
with the data scope applied in the ``WHERE`` clause by :func:`crm_platform.fastread.scope_sql`, the same rule as
the SQLAlchemy path's :func:`crm_platform.scope.scope_condition`.

The row becomes a :class:`Customer` through the store's own mapping (``CustomerStore._to_customer``: the same
decryption and conversions), so both paths answer the same object; a test compares them. On SQLite, or before
anything is configured, :class:`CustomerReads` uses :meth:`CustomerStore.get`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from crm_customer.domain import Customer
from crm_customer.store import CustomerStore
from crm_customer.store.tables import customer_keys, customer_tags, customers
from crm_platform.auth_context import Identity
from crm_platform.errors import NotFound
from crm_platform.fastread import ReadPool, scope_sql


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _select_sql() -> str:
    """Every column the store's mapping reads (``request_id`` excepted, as in the store), from the table
    definitions, so a column added there is read here too."""
    columns = ", ".join(f"c.{_quoted(col.name)}" for col in customers.c if col.name != "request_id")
    return (
        f"SELECT {columns}, k.{_quoted(customer_keys.c.kid.name)}, k.{_quoted(customer_keys.c.wrapped.name)}, "
        f"ARRAY(SELECT t.{_quoted(customer_tags.c.tag.name)} FROM {_quoted(customer_tags.name)} t "
        f"WHERE t.{_quoted(customer_tags.c.customer_id.name)} = c.{_quoted(customers.c.id.name)} "
        f"ORDER BY t.{_quoted(customer_tags.c.tag.name)}) AS crm_tags "
        f"FROM {_quoted(customers.name)} c LEFT JOIN {_quoted(customer_keys.name)} k "
        f"ON k.{_quoted(customer_keys.c.customer_id.name)} = c.{_quoted(customers.c.id.name)} "
        f"WHERE c.{_quoted(customers.c.id.name)} = $1 AND "
    )


class _Row:
    """An asyncpg record where the store's mapping expects an SQLAlchemy row (it reads ``row._mapping``)."""

    __slots__ = ("_mapping",)

    def __init__(self, record: Mapping[str, Any]) -> None:
        self._mapping = record


class CustomerReads:
    """``get`` one customer in scope: asyncpg when a pool is given (PostgreSQL), else the SQLAlchemy store."""

    def __init__(self, store: CustomerStore, pool: ReadPool | None) -> None:
        self._store = store
        self.pool = pool
        self._head = _select_sql()
        self._statements: dict[str, str] = {}

    def _sql(self, condition: str) -> str:
        sql = self._statements.get(condition)
        if sql is None:
            sql = self._statements[condition] = self._head + condition
        return sql

    async def get(self, identity: Identity, customer_id: str) -> Customer:
        """One customer inside the caller's scope; :class:`NotFound` otherwise (no existence leak)."""
        if self.pool is None:
            return await self._store.get(identity, customer_id)
        params: list[Any] = [customer_id]
        condition = scope_sql(
            identity, params, owner="c.owner_id", team="c.team_id", branch="c.branch_id", region="c.region"
        )
        record = await self.pool.fetchrow(self._sql(condition), params)
        if record is None:
            raise NotFound(f"customer {customer_id} not found")
        # The store's own mapping (decryption, conversions): one mapping for both read paths.
        customer = self._store._to_customer(_Row(record))
        return dataclasses.replace(customer, tags=tuple(record["crm_tags"]))
