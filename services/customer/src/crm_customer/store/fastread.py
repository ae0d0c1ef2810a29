"""The hottest reads — one customer by id, and a page of a list or search — straight through asyncpg on
PostgreSQL, in the caller's scope.

``GET /api/v1/customers/{id}`` is the gateway's most frequent call. Through the SQLAlchemy session it cost two
statements (the customer joined with its wrapped key, then its tags), an implicit ``BEGIN`` and ``ROLLBACK``,
statement compilation and cache keys, and a greenlet switch per step: profiled at well over half the customer
service's CPU per request (issue #3, "Performance"). Here it is **one** prepared statement on a
:class:`crm_platform.fastread.ReadPool` — the row, its wrapped data key and its tags (an ``ARRAY`` sub-select) —
with the data scope applied in the ``WHERE`` clause by :func:`crm_platform.fastread.scope_sql`, the same rule as
the SQLAlchemy path's :func:`crm_platform.scope.scope_condition`.

Lists and searches (``GET /api/v1/customers``, segment members) are the same statement with the filters of
:class:`crm_customer.store.CustomerFilter` written as SQL (:func:`list_conditions`, the rules of
``CustomerStore._conditions``), keyset pagination as a row comparison — ``(created_at, id) < ($n, $m)`` — that
PostgreSQL takes as a range on the scope's ``(scope, sort, id)`` index (the ``sort < x OR (sort = x AND id < y)``
form used before is only a filter there, so page *n* walked every row of the pages before it), and a name prefix
as the range ``name >= $n AND name < $m`` of the name indexes (the column compares in byte order, ``COLLATE "C"``,
migration 0015), which a generic plan of the prepared statement can use too (``LIKE $n`` cannot) and whose row
count PostgreSQL estimates from the column's histogram. The page is chosen from ``customers`` alone and only its
rows are joined with their keys and tags.
Over a million customers the session path spent ~7 ms of the service's CPU on a page of 50 that PostgreSQL
answers in ~1 ms (issue #4, "Performance"; ``bench/customers.py``).

A row becomes a :class:`Customer` through the store's own mapping (``CustomerStore._to_customer``: the same
decryption and conversions), so both paths answer the same objects; tests compare them filter by filter. On
SQLite, or before anything is configured, :class:`CustomerReads` uses the store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from crm_customer.domain import Customer, birth_date_bounds
from crm_customer.store import _SORTS, CustomerFilter, CustomerStore, _decode_cursor, _encode_cursor
from crm_customer.store.tables import customer_keys, customer_tags, customers
from crm_platform.auth_context import Identity
from crm_platform.errors import FieldViolation, InvalidArgument, NotFound
from crm_platform.fastread import ReadPool, scope_sql
from crm_platform.pii import Keyring


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _select_sql(source: str = _quoted(customers.name)) -> str:
    """Every column the store's mapping reads (``request_id`` and its fingerprint excepted, as in the store), from
    the table definitions, so a column added there is read here too, of the customers in ``source`` (the table, or
    a sub-select of it) as ``c``; ``WHERE`` and its conditions may follow."""
    return f"{_SELECT}{source}{_JOIN}"


_SELECT = (
    "SELECT "
    + ", ".join(
        f"c.{_quoted(col.name)}" for col in customers.c if col.name not in ("request_id", "request_fingerprint")
    )
    + f", k.{_quoted(customer_keys.c.kid.name)}, k.{_quoted(customer_keys.c.wrapped.name)}, "
    f"ARRAY(SELECT t.{_quoted(customer_tags.c.tag.name)} FROM {_quoted(customer_tags.name)} t "
    f"WHERE t.{_quoted(customer_tags.c.customer_id.name)} = c.{_quoted(customers.c.id.name)} "
    f"ORDER BY t.{_quoted(customer_tags.c.tag.name)}) AS crm_tags FROM "
)
_JOIN = (
    f" c LEFT JOIN {_quoted(customer_keys.name)} k "
    f"ON k.{_quoted(customer_keys.c.customer_id.name)} = c.{_quoted(customers.c.id.name)} "
)


def prefix_upper_bound(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix``, in code point order (which is UTF-8
    byte order, the order of the ``name`` column's ``C`` collation); ``None`` when there is none (only U+10FFFF
    characters)."""
    chars = list(prefix)
    while chars:
        point = ord(chars[-1]) + 1
        if 0xD800 <= point <= 0xDFFF:  # surrogates are not characters of a UTF-8 string
            point = 0xE000
        if point <= 0x10FFFF:
            chars[-1] = chr(point)
            return "".join(chars)
        chars.pop()
    return None


def list_conditions(keyring: Keyring, identity: Identity, where: CustomerFilter, params: list[Any]) -> list[str]:
    """The SQL conditions (on ``customers c``) of ``CustomerStore._conditions``, the caller's scope first; their
    bind values are appended to ``params``. Every field of :class:`CustomerFilter` that filters is handled here
    (a test holds the two lists together)."""

    def p(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    def one_of(column: str, values: list[str] | tuple[str, ...]) -> str:
        # One value as "=": an index on (scope, column, sort) then answers in sort order (= ANY(...) does not).
        return f"{column} = {p(values[0])}" if len(values) == 1 else f"{column} = ANY({p(list(values))}::varchar[])"

    scope = scope_sql(identity, params, owner="c.owner_id", team="c.team_id", branch="c.branch_id", region="c.region")
    # A merged duplicate is read by id only (links resolve); lists and searches answer its survivor.
    conditions = [scope, "c.merged_into IS NULL"]
    if where.name:
        conditions.append(f"c.name = {p(where.name)}")
    if where.name_prefix:
        # "Starts with" as a range in code point order (the column's collation), which the name indexes serve (a
        # generic plan of the prepared statement too, where LIKE $n is only a filter) and whose row estimate
        # PostgreSQL takes from the column's histogram; LIKE only when no string bounds the range from above.
        conditions.append(f"c.name >= {p(where.name_prefix)}")
        upper = prefix_upper_bound(where.name_prefix)
        if upper is not None:
            conditions.append(f"c.name < {p(upper)}")
        else:
            escaped = where.name_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(f"c.name LIKE {p(escaped + '%')} ESCAPE '\\'")
    # "Live" lets the partial unique indexes on the hashes (WHERE erased_at IS NULL) serve the search.
    if where.id_number:
        hashes = keyring.lookup_hashes("id_number", where.id_number)
        conditions.append(f"{one_of('c.id_number_hash', hashes)} AND c.erased_at IS NULL")
    if where.mobile:
        hashes = keyring.lookup_hashes("mobile", where.mobile)
        conditions.append(f"{one_of('c.mobile_hash', hashes)} AND c.erased_at IS NULL")
    if where.customer_no:
        conditions.append(f"c.customer_no = {p(where.customer_no)}")
    if where.tiers:
        conditions.append(one_of("c.tier", where.tiers))
    for tag in where.tags:
        conditions.append(f"EXISTS (SELECT 1 FROM customer_tags ft WHERE ft.customer_id = c.id AND ft.tag = {p(tag)})")
    if where.risk_appetites:
        conditions.append(one_of("c.risk_appetite", where.risk_appetites))
    if where.owner_id:
        conditions.append(f"c.owner_id = {p(where.owner_id)}")
    if where.unassigned:
        conditions.append("c.owner_id = ''")
    if where.branch_id:
        conditions.append(f"c.branch_id = {p(where.branch_id)}")
    if where.team_id:
        conditions.append(f"c.team_id = {p(where.team_id)}")
    if where.kind:
        conditions.append(f"c.kind = {p(where.kind)}")
    if where.created_from is not None:
        conditions.append(f"c.created_at >= {p(where.created_from)}")
    if where.created_to is not None:
        conditions.append(f"c.created_at < {p(where.created_to)}")
    if where.age_min or where.age_max:
        after, on_or_before = birth_date_bounds(where.age_min, where.age_max, where.today or dt.date.today())
        if after is not None:
            conditions.append(f"c.birth_date > {p(after)}")
        if on_or_before is not None:
            conditions.append(f"c.birth_date <= {p(on_or_before)}")
    if where.exclude_do_not_disturb:
        conditions.append("c.do_not_disturb IS FALSE")
    if where.live_only:
        conditions.append("c.erased_at IS NULL")
    if where.last_contact_before is not None:
        conditions.append(f"(c.last_contact_at IS NULL OR c.last_contact_at < {p(where.last_contact_before)})")
    return conditions


class _Row:
    """An asyncpg record where the store's mapping expects an SQLAlchemy row (it reads ``row._mapping``)."""

    __slots__ = ("_mapping",)

    def __init__(self, record: Mapping[str, Any]) -> None:
        self._mapping = record


class CustomerReads:
    """``get`` one customer and ``list`` a page, in scope: asyncpg when a pool is given (PostgreSQL), else the
    SQLAlchemy store."""

    def __init__(self, store: CustomerStore, pool: ReadPool | None) -> None:
        self._store = store
        self.pool = pool
        self._head = _select_sql()
        self._statements: dict[str, str] = {}

    def _sql(self, condition: str) -> str:
        sql = self._statements.get(condition)
        if sql is None:
            sql = self._statements[condition] = (
                f"{self._head}WHERE c.{_quoted(customers.c.id.name)} = $1 AND {condition}"
            )
        return sql

    def _customer(self, record: Mapping[str, Any]) -> Customer:
        # The store's own mapping (decryption, conversions): one mapping for both read paths.
        return self._store._to_customer(_Row(record), tuple(record["crm_tags"]))

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
        return self._customer(record)

    async def list(
        self, identity: Identity, where: CustomerFilter, limit: int, cursor: str
    ) -> tuple[list[Customer], str]:
        """One page of the caller's customers matching ``where``, and the next cursor ("" after the last page):
        what :meth:`CustomerStore.list` answers."""
        if self.pool is None:
            return await self._store.list(identity, where, limit, cursor)
        descending = where.order_by.startswith("-")
        sort_name = where.order_by.lstrip("-") or "created_at"
        if sort_name not in _SORTS:
            raise InvalidArgument([FieldViolation("order_by", f"must be one of {', '.join(sorted(_SORTS))}")])
        params: list[Any] = []
        conditions = list_conditions(self._store._keyring, identity, where, params)
        sort = f"c.{_quoted(sort_name)}"
        direction = "DESC" if descending else "ASC"
        if cursor:
            last_value, last_id = _decode_cursor(cursor, sort_name)
            params.extend((last_value, last_id))
            # A row comparison: a range of the (scope, sort, id) index, where "a < x OR (a = x AND id < y)" is a
            # filter on the rows before it.
            conditions.append(f"({sort}, c.id) {'<' if descending else '>'} (${len(params) - 1}, ${len(params)})")
        params.append(limit + 1)
        order = f"ORDER BY {sort} {direction}, c.id {direction}"
        # The page is chosen from the customers alone, then joined with keys and tags: a plan that sorts the
        # matching customers (a name prefix) does not look up a key for each one it then drops.
        page_sql = (
            f"(SELECT c.* FROM {_quoted(customers.name)} c WHERE {' AND '.join(conditions)} "
            f"{order} LIMIT ${len(params)})"
        )
        sql = f"{_select_sql(page_sql)}{order}"
        records = await self.pool.fetch(sql, params)
        page = [self._customer(r) for r in records[:limit]]
        next_cursor = ""
        if len(records) > limit:
            last = records[limit - 1]
            next_cursor = _encode_cursor(last[sort_name], last["id"])
        return page, next_cursor
