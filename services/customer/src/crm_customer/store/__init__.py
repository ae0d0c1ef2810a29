"""Customer queries (tables in ``store.tables``; holdings and segments in their modules).
Every read applies the caller's data scope in SQL.

Personal fields (ID number, mobile, e-mail, address, contact mobile) are stored only as AES-GCM ciphertext
under the customer's own data key (``customer_keys``, wrapped by a master key); ID number and mobile also
as keyed hashes for exact lookup and duplicate detection. Deleting the key row is the erasure.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm_customer import events
from crm_customer.domain import (
    SENSITIVE_FIELDS,
    Customer,
    CustomerKind,
    FieldChange,
    Profile,
    birth_date_bounds,
    changes,
    erased_profile,
)
from crm_customer.store.holdings import HoldingQueries
from crm_customer.store.merge import MergeQueries
from crm_customer.store.ownership import OwnershipQueries
from crm_customer.store.segments import SegmentQueries
from crm_customer.store.tables import (
    customer_history,
    customer_keys,
    customer_tags,
    customers,
)
from crm_customer.store.tags import TagQueries
from crm_platform.auth_context import Identity
from crm_platform.db import as_utc
from crm_platform.errors import AlreadyExists, Conflict, FieldViolation, InvalidArgument, NotFound
from crm_platform.idempotency import same_request
from crm_platform.ids import new_id
from crm_platform.outbox import Outbox, utcnow
from crm_platform.pii import Keyring, WrappedKey
from crm_platform.scope import in_scope, scope_condition

_SEALED = tuple(SENSITIVE_FIELDS)  # stored as <field>_enc
_HASHED = ("id_number", "mobile")  # also stored as <field>_hash
_PLAIN = tuple(
    f.name
    for f in dataclasses.fields(Profile)
    if f.name not in _SEALED and f.name not in ("annual_income", "interests")
)

_INSERT_KEY = insert(customer_keys)
_INSERT_CUSTOMER = insert(customers)
_INSERT_HISTORY = insert(customer_history)


def _duplicate_query(condition: ColumnElement[bool]) -> Any:
    c = customers.c
    return (
        select(c.id, c.owner_id, c.team_id, c.branch_id, c.region)
        .where(condition, c.erased_at.is_(None), c.id != bindparam("exclude_id"))
        .limit(1)
    )


# Built once; the erased_at condition lets PostgreSQL use the partial unique indexes on the hashes.
_DUPLICATE_OF = {
    "id_number": _duplicate_query(customers.c.id_number_hash.in_(bindparam("value", expanding=True))),
    "mobile": _duplicate_query(customers.c.mobile_hash.in_(bindparam("value", expanding=True))),
    "credit_code": _duplicate_query(customers.c.credit_code == bindparam("value")),
}
_COLUMNS = [c for c in customers.c if c.name not in ("request_id", "request_fingerprint")]
DUPLICATE_FIELDS = ("id_number", "mobile", "credit_code")  # what a duplicate shares, in the order reported
# Every customer column's value when a create gives none: what SQLAlchemy's insert() would fill in from the column
# defaults (the one-statement create and the import's COPY name every column).
_CUSTOMER_DEFAULTS = {
    c.name: c.default.arg if c.default is not None and c.default.is_scalar else None  # type: ignore[attr-defined]
    for c in customers.c
}
_SORTS = {"created_at", "updated_at", "name", "customer_no"}


@dataclass(frozen=True)
class CustomerFilter:
    """Exact search terms and filters of a list (empty means "any")."""

    name: str = ""
    name_prefix: str = ""
    id_number: str = ""
    mobile: str = ""
    customer_no: str = ""
    tiers: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    risk_appetites: tuple[str, ...] = ()
    owner_id: str = ""
    unassigned: bool = False
    branch_id: str = ""
    team_id: str = ""
    kind: str = ""
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None
    order_by: str = "-created_at"
    age_min: int = 0
    age_max: int = 0
    exclude_do_not_disturb: bool = False
    live_only: bool = False
    today: dt.date | None = None
    last_contact_before: dt.datetime | None = None  # also keeps the never contacted


@dataclass(frozen=True)
class HistoryEntry:
    """One change of a customer file."""

    id: str
    action: str
    actor: str
    occurred_at: dt.datetime
    note: str
    changes: list[FieldChange]


class CustomerStore(HoldingQueries, SegmentQueries, OwnershipQueries, TagQueries, MergeQueries):
    """Reads and writes customer files; writes put their events in the outbox in the same transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], outbox: Outbox, keyring: Keyring) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._keyring = keyring

    # Reading

    @staticmethod
    def _scoped(identity: Identity) -> ColumnElement[bool]:
        c = customers.c
        return scope_condition(identity, owner=c.owner_id, team=c.team_id, branch=c.branch_id, region=c.region)

    def _select(self) -> Any:
        k = customer_keys.c
        return select(*_COLUMNS, k.kid, k.wrapped).select_from(
            customers.outerjoin(customer_keys, k.customer_id == customers.c.id)
        )

    def _to_customer(self, row: Row[Any], tags: tuple[str, ...] = ()) -> Customer:
        m = row._mapping
        values: dict[str, Any] = {name: m[name] for name in _PLAIN}
        values["birth_date"] = m["birth_date"]
        interests = m["interests"]
        values["interests"] = () if not interests or interests == "[]" else tuple(json.loads(interests))
        values["annual_income"] = "" if m["annual_income"] is None else f"{decimal.Decimal(m['annual_income']):.2f}"
        values["credit_code"] = m["credit_code"] or ""
        if m["wrapped"] is not None:
            data_key = self._keyring.unwrap(m["id"], WrappedKey(m["kid"], m["wrapped"]))
            for name in _SEALED:
                blob = m[f"{name}_enc"]
                values[name] = "" if blob is None else self._keyring.decrypt(data_key, m["id"], name, blob)
        return Customer(
            id=m["id"],
            customer_no=m["customer_no"],
            kind=CustomerKind(m["kind"]),
            profile=Profile(**values),
            owner_id=m["owner_id"],
            team_id=m["team_id"],
            branch_id=m["branch_id"],
            region=m["region"],
            version=m["version"],
            created_by=m["created_by"],
            created_at=as_utc(m["created_at"]),
            updated_at=as_utc(m["updated_at"]),
            erased_at=as_utc(m["erased_at"]) if m["erased_at"] is not None else None,
            aum=decimal.Decimal(m["aum"] or 0).quantize(decimal.Decimal("0.01")),
            product_count=m["product_count"] or 0,
            last_contact_at=as_utc(m["last_contact_at"]) if m["last_contact_at"] is not None else None,
            merged_into=m["merged_into"] or "",
            merged_at=as_utc(m["merged_at"]) if m["merged_at"] is not None else None,
            tags=tags,
        )

    async def directory_entries(self, customer_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Ownership facts of the customers that exist and are not erased (for another service's directory; no
        personal data, so no scope: only service identities holding ``customer:lookup`` ask)."""
        c = customers.c
        query = select(c.id, c.owner_id, c.team_id, c.branch_id, c.region, c.merged_into, c.updated_at).where(
            c.id.in_(list(customer_ids)), c.erased_at.is_(None)
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return [
            {
                "customer_id": r.id,
                "owner_id": r.owner_id or "",
                "team_id": r.team_id or "",
                "branch_id": r.branch_id or "",
                "region": r.region or "",
                "merged_into": r.merged_into or "",
                "as_of": as_utc(r.updated_at),
            }
            for r in rows
        ]

    async def get(self, identity: Identity, customer_id: str) -> Customer:
        """One customer inside the caller's scope; :class:`NotFound` otherwise (no existence leak)."""
        async with self._sessions() as session:
            return await self._get(session, identity, customer_id)

    async def _get(self, session: AsyncSession, identity: Identity, customer_id: str) -> Customer:
        query = self._select().where(customers.c.id == customer_id, self._scoped(identity))
        found = await self._load(session, (await session.execute(query)).all())
        if not found:
            raise NotFound(f"customer {customer_id} not found")
        return found[0]

    async def _load(self, session: AsyncSession, rows: Sequence[Row[Any]]) -> list[Customer]:
        """Rows → customers (decrypted), with their tags fetched in one query."""
        loaded = [self._to_customer(r) for r in rows]
        if not loaded:
            return loaded
        t = customer_tags.c
        query = select(t.customer_id, t.tag).where(t.customer_id.in_([c.id for c in loaded])).order_by(t.tag)
        tags: dict[str, list[str]] = {}
        for customer_id, tag in (await session.execute(query)).all():
            tags.setdefault(customer_id, []).append(tag)
        return [dataclasses.replace(c, tags=tuple(tags.get(c.id, ()))) for c in loaded]

    async def find_by_request(self, identity: Identity, request_id: str, fingerprint: str = "") -> Customer | None:
        """The customer an earlier call with the same request id created, if any (idempotent create);
        :class:`crm_platform.idempotency.IdempotencyKeyReused` when that call's request differs (``fingerprint``)."""
        async with self._sessions() as session:
            query = (
                self._select()
                .add_columns(customers.c.request_fingerprint)
                .where(customers.c.request_id == request_id, self._scoped(identity))
            )
            rows = (await session.execute(query)).all()
            found = await self._load(session, rows)
        return same_request(found[0], rows[0].request_fingerprint, fingerprint) if found else None

    def _conditions(self, identity: Identity, where: CustomerFilter) -> list[ColumnElement[bool]]:
        c = customers.c
        # A merged duplicate is read by id only (links resolve); lists and searches answer its survivor.
        conditions: list[ColumnElement[bool]] = [self._scoped(identity), c.merged_into.is_(None)]
        if where.name:
            conditions.append(c.name == where.name)
        if where.name_prefix:
            escaped = where.name_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(c.name.like(f"{escaped}%", escape="\\"))
        # Erasure clears the hashes, so "live" changes no answer here; it lets the partial unique indexes on the
        # hashes (WHERE erased_at IS NULL) serve the search: without it, a full scan (0.5 s over 1M customers).
        if where.id_number:
            conditions.append(c.id_number_hash.in_(self._keyring.lookup_hashes("id_number", where.id_number)))
            conditions.append(c.erased_at.is_(None))
        if where.mobile:
            conditions.append(c.mobile_hash.in_(self._keyring.lookup_hashes("mobile", where.mobile)))
            conditions.append(c.erased_at.is_(None))
        if where.customer_no:
            conditions.append(c.customer_no == where.customer_no)
        if where.tiers:
            conditions.append(c.tier.in_(where.tiers))
        for tag in where.tags:
            t = customer_tags.c
            conditions.append(exists().where(t.customer_id == c.id, t.tag == tag))
        if where.risk_appetites:
            conditions.append(c.risk_appetite.in_(where.risk_appetites))
        if where.owner_id:
            conditions.append(c.owner_id == where.owner_id)
        if where.unassigned:
            conditions.append(c.owner_id == "")
        if where.branch_id:
            conditions.append(c.branch_id == where.branch_id)
        if where.team_id:
            conditions.append(c.team_id == where.team_id)
        if where.kind:
            conditions.append(c.kind == where.kind)
        if where.created_from is not None:
            conditions.append(c.created_at >= where.created_from)
        if where.created_to is not None:
            conditions.append(c.created_at < where.created_to)
        if where.age_min or where.age_max:
            after, on_or_before = birth_date_bounds(where.age_min, where.age_max, where.today or dt.date.today())
            if after is not None:
                conditions.append(c.birth_date > after)
            if on_or_before is not None:
                conditions.append(c.birth_date <= on_or_before)
        if where.exclude_do_not_disturb:
            conditions.append(c.do_not_disturb.is_(False))
        if where.live_only:
            conditions.append(c.erased_at.is_(None))
        if where.last_contact_before is not None:
            before = where.last_contact_before
            conditions.append(or_(c.last_contact_at.is_(None), c.last_contact_at < before))
        return conditions

    async def count(self, identity: Identity, where: CustomerFilter) -> int:
        """How many of the caller's customers match ``where``."""
        query = select(func.count()).select_from(customers).where(*self._conditions(identity, where))
        async with self._sessions() as session:
            return int((await session.execute(query)).scalar_one())

    async def list(
        self, identity: Identity, where: CustomerFilter, limit: int, cursor: str
    ) -> tuple[list[Customer], str]:
        """One page of the caller's customers matching ``where``, and the next cursor ("" after the last page)."""
        c = customers.c
        conditions = self._conditions(identity, where)
        descending = where.order_by.startswith("-")
        sort_name = where.order_by.lstrip("-") or "created_at"
        if sort_name not in _SORTS:
            raise InvalidArgument([FieldViolation("order_by", f"must be one of {', '.join(sorted(_SORTS))}")])
        sort_col = c[sort_name]
        if cursor:
            last_value, last_id = _decode_cursor(cursor, sort_name)
            # A row comparison, (sort, id) < (last sort, last id): a range of the (scope, sort, id) indexes where
            # "sort < x OR (sort = x AND id < y)" is a filter over every row of the pages before.
            key = tuple_(sort_col, c.id)
            last = tuple_(literal(last_value, sort_col.type), literal(last_id, c.id.type))
            conditions.append(key < last if descending else key > last)
        order = (sort_col.desc(), c.id.desc()) if descending else (sort_col.asc(), c.id.asc())
        query = self._select().where(*conditions).order_by(*order).limit(limit + 1)
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
            page = await self._load(session, rows[:limit])
        next_cursor = ""
        if len(rows) > limit:
            last = rows[limit - 1]._mapping
            next_cursor = _encode_cursor(last[sort_name], last["id"])
        return page, next_cursor

    async def history(
        self, identity: Identity, customer_id: str, limit: int, cursor: str
    ) -> tuple[list[HistoryEntry], str]:
        """A page of a customer's history, newest first (the customer must be in the caller's scope)."""
        h = customer_history.c
        async with self._sessions() as session:
            await self._get(session, identity, customer_id)
            query = select(customer_history).where(h.customer_id == customer_id)
            if cursor:
                query = query.where(h.id < cursor)
            rows = (await session.execute(query.order_by(h.id.desc()).limit(limit + 1))).all()
        entries = [
            HistoryEntry(
                id=r.id,
                action=r.action,
                actor=r.actor,
                occurred_at=as_utc(r.occurred_at),
                note=r.note,
                changes=[FieldChange(**item) for item in json.loads(r.changes)],
            )
            for r in rows[:limit]
        ]
        return entries, (entries[-1].id if len(rows) > limit else "")

    # Writing

    async def create(self, identity: Identity, customer: Customer, request_id: str, fingerprint: str = "") -> Customer:
        """Insert the customer, its data key, history and ``customer.created`` event in one transaction; the
        request's ``fingerprint`` is stored beside ``request_id`` (see :mod:`crm_platform.idempotency`)."""
        try:
            async with self._sessions() as session, session.begin():
                await self._reject_duplicates(session, identity, customer.profile, exclude_id=None)
                rows = self.create_rows(customer, request_id, fingerprint)
                # Prepared statements with parameters, not .values(...): building and caching a statement
                # per call was most of a create's CPU in the service (profile in bench/customers.py).
                await session.execute(_INSERT_KEY, rows[customer_keys.name])
                await session.execute(_INSERT_CUSTOMER, rows[customers.name])
                await session.execute(_INSERT_HISTORY, rows[customer_history.name])
                await self._outbox.add(
                    session,
                    events.CUSTOMER_CREATED,
                    events.customer_created(customer),
                    subject_id=customer.id,
                    actor=customer.created_by,
                )
        except IntegrityError:
            # A concurrent create won the race: answer as if we had seen it first (422 if it was another request).
            if request_id and (earlier := await self.find_by_request(identity, request_id, fingerprint)) is not None:
                return earlier
            await self.reject_duplicates(identity, customer.profile)
            raise
        return customer

    # The one-statement create of ``store.fastwrite`` (PostgreSQL) writes the same rows as ``create``.

    @property
    def outbox(self) -> Outbox:
        """The outbox this store's writes add their events to."""
        return self._outbox

    def create_rows(self, customer: Customer, request_id: str, fingerprint: str = "") -> dict[str, dict[str, Any]]:
        """The rows a create inserts besides its event, by table name, every column given a value."""
        data_key, wrapped = self._keyring.new_data_key(customer.id)
        columns = self._profile_columns(customer.id, data_key, customer.profile)
        created = _changes_json(changes(Profile(name=""), customer.profile))
        return {
            customer_keys.name: key_row(customer.id, wrapped, customer.created_at),
            customers.name: customer_row(customer, request_id, columns, fingerprint),
            customer_history.name: history_row(
                customer.id, "created", customer.created_by, customer.created_at, "", created
            ),
        }

    def duplicate_keys(self, profile: Profile) -> tuple[list[str], list[str], str | None]:
        """The lookup hashes (under every key id) of ID number and mobile, and the credit code: what a
        duplicate would share."""
        return (
            self._keyring.lookup_hashes("id_number", profile.id_number) if profile.id_number else [],
            self._keyring.lookup_hashes("mobile", profile.mobile) if profile.mobile else [],
            profile.credit_code or None,
        )

    async def reject_duplicates(self, identity: Identity, profile: Profile) -> None:
        """:class:`AlreadyExists` naming the (in-scope) customer that already holds ``profile``'s ID number,
        mobile or credit code, if any."""
        async with self._sessions() as session:
            await self._reject_duplicates(session, identity, profile, exclude_id=None)

    async def save_revision(
        self,
        identity: Identity,
        before: Customer,
        profile: Profile,
        diff: list[FieldChange],
        expected_version: int,
        note: str,
        now: dt.datetime,
    ) -> Customer:
        """Store a revised profile if the file is still at ``expected_version`` (else :class:`Conflict`)."""
        if before.version != expected_version:
            raise Conflict(f"customer {before.id} is at version {before.version}, not {expected_version}")
        if not diff:
            return before
        after = dataclasses.replace(before, profile=profile, version=before.version + 1, updated_at=now)
        async with self._sessions() as session, session.begin():
            await self._reject_duplicates(session, identity, profile, exclude_id=before.id)
            data_key = await self._data_key(session, before.id)
            values = self._profile_columns(before.id, data_key, profile)
            await self._update_versioned(session, before, version=after.version, updated_at=now, **values)
            await self._record(session, before.id, "updated", identity.user_id, now, note, diff)
            changed = [c.field for c in diff]
            await self._outbox.add(
                session,
                events.CUSTOMER_UPDATED,
                events.customer_updated(after, changed),
                subject_id=before.id,
                actor=identity.user_id,
            )
            if before.profile.tier != profile.tier:
                await self._outbox.add(
                    session,
                    events.CUSTOMER_TIER_CHANGED,
                    events.tier_changed(after, before.profile.tier),
                    subject_id=before.id,
                    actor=identity.user_id,
                )
        return after

    async def erase(self, identity: Identity, before: Customer, reason: str, now: dt.datetime) -> Customer:
        """Crypto-shred: destroy the data key, drop the lookup hashes and personal plain fields, scrub history.

        Files merged into this one (and into those, and so on) hold the same person's data under data keys of
        their own: they are erased with it, in the same transaction, whoever's scope they lie in, each with its
        own history entry and ``customer.erased`` event."""
        async with self._sessions() as session, session.begin():
            after = await self._erase_one(session, identity, before, reason, now)
            for merged in await self._merged_into(session, before.id):
                if merged.erased_at is None:
                    note = f"{reason} (erased with {before.id}, into which it was merged)"[:500]
                    await self._erase_one(session, identity, merged, note, now)
        return after

    async def _merged_into(self, session: AsyncSession, survivor_id: str) -> list[Customer]:
        """Every file merged into ``survivor_id``, directly or through files merged into those."""
        found: list[Customer] = []
        seen = {survivor_id}
        frontier = [survivor_id]
        while frontier:
            query = self._select().where(customers.c.merged_into.in_(frontier))
            batch = [c for c in await self._load(session, (await session.execute(query)).all()) if c.id not in seen]
            seen.update(c.id for c in batch)
            found.extend(batch)
            frontier = [c.id for c in batch]
        return found

    async def _erase_one(
        self, session: AsyncSession, identity: Identity, before: Customer, reason: str, now: dt.datetime
    ) -> Customer:
        remaining = erased_profile(before.profile)
        after = dataclasses.replace(
            before, profile=remaining, version=before.version + 1, updated_at=now, erased_at=now
        )
        h = customer_history.c
        await session.execute(delete(customer_keys).where(customer_keys.c.customer_id == before.id))
        plain = self._plain_columns(remaining)
        await self._update_versioned(
            session,
            before,
            version=after.version,
            updated_at=now,
            erased_at=now,
            id_number_hash=None,
            mobile_hash=None,
            **plain,
        )
        # Earlier history may hold masked fragments and plain names: keep only which fields changed.
        for row in (await session.execute(select(h.id, h.changes).where(h.customer_id == before.id))).all():
            scrubbed = [{**c, "before": "", "after": ""} for c in json.loads(row.changes)]
            await session.execute(
                update(customer_history)
                .where(h.customer_id == before.id, h.id == row.id)
                .values(changes=json.dumps(scrubbed))
            )
        await self._record(session, before.id, "erased", identity.user_id, now, reason, [])
        await self._outbox.add(
            session,
            events.CUSTOMER_ERASED,
            events.customer_erased(after),
            subject_id=before.id,
            actor=identity.user_id,
        )
        return after

    async def record_reveal(self, identity: Identity, customer_id: str, fields: list[str], purpose: str) -> None:
        """Keep a reveal of sensitive fields in the customer's history (who, when, which fields, why)."""
        async with self._sessions() as session, session.begin():
            diff = [FieldChange(f, "", "") for f in fields]
            await self._record(session, customer_id, "revealed", identity.user_id, utcnow(), purpose, diff)

    # Internals

    async def _update_versioned(self, session: AsyncSession, before: Customer, **values: Any) -> None:
        c = customers.c
        result = await session.execute(
            update(customers).where(c.id == before.id, c.version == before.version).values(**values)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(f"customer {before.id} changed meanwhile; read it again")

    async def _data_key(self, session: AsyncSession, customer_id: str) -> bytes:
        k = customer_keys.c
        row = (await session.execute(select(k.kid, k.wrapped).where(k.customer_id == customer_id))).first()
        if row is None:
            raise NotFound(f"customer {customer_id} was erased")
        return self._keyring.unwrap(customer_id, WrappedKey(row.kid, row.wrapped))

    def _plain_columns(self, profile: Profile) -> dict[str, Any]:
        values: dict[str, Any] = {name: getattr(profile, name) for name in _PLAIN}
        values["credit_code"] = profile.credit_code or None
        values["interests"] = json.dumps(list(profile.interests), ensure_ascii=False) if profile.interests else "[]"
        values["annual_income"] = decimal.Decimal(profile.annual_income) if profile.annual_income else None
        for name in _SEALED:
            values[f"{name}_enc"] = None
        return values

    def _profile_columns(
        self, customer_id: str, data_key: bytes, profile: Profile, hashes: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """The profile's columns: plain ones as they are, personal ones encrypted under ``data_key``, and the lookup
        hashes (under the active key; ``hashes`` gives those already computed, by field)."""
        values = self._plain_columns(profile)
        present = {name: value for name in _SEALED if (value := getattr(profile, name))}
        for name, blob in self._keyring.encrypt_fields(data_key, customer_id, present).items():
            values[f"{name}_enc"] = blob
        for name in _HASHED:
            value = getattr(profile, name)
            known = hashes.get(name) if hashes else None
            values[f"{name}_hash"] = (known or self._keyring.lookup_hash(name, value)) if value else None
        return values

    async def _reject_duplicates(
        self, session: AsyncSession, identity: Identity, profile: Profile, exclude_id: str | None
    ) -> None:
        candidates: list[tuple[str, Any]] = []
        if profile.id_number:
            candidates.append(("id_number", self._keyring.lookup_hashes("id_number", profile.id_number)))
        if profile.mobile:
            candidates.append(("mobile", self._keyring.lookup_hashes("mobile", profile.mobile)))
        if profile.credit_code:
            candidates.append(("credit_code", profile.credit_code))
        for field, value in candidates:
            row = (
                await session.execute(_DUPLICATE_OF[field], {"value": value, "exclude_id": exclude_id or ""})
            ).first()
            if row is not None:
                raise duplicate_error(identity, field, row._mapping)

    async def _record(
        self,
        session: AsyncSession,
        customer_id: str,
        action: str,
        actor: str,
        at: dt.datetime,
        note: str,
        diff: Sequence[FieldChange],
    ) -> None:
        await session.execute(_INSERT_HISTORY, history_row(customer_id, action, actor, at, note, _changes_json(diff)))


def duplicate_error(identity: Identity, field: str, existing: Mapping[str, Any]) -> AlreadyExists:
    """409 for a customer whose ``field`` an ``existing`` one (its id and scope columns) holds already, naming
    it only when the caller may see it."""
    visible = in_scope(
        identity,
        owner=existing["owner_id"],
        team=existing["team_id"],
        branch=existing["branch_id"],
        region=existing["region"],
    )
    return AlreadyExists(
        f"a customer with this {field} already exists",
        existing_id=existing["id"] if visible else "",
        reason=f"DUPLICATE_{field.upper()}",
    )


def customer_row(customer: Customer, request_id: str, columns: dict[str, Any], fingerprint: str = "") -> dict[str, Any]:
    """A new customer's row, every column given a value: its facts, its (encrypted) profile ``columns``, the
    request's idempotency ``fingerprint`` and the column defaults for the rest."""
    return {
        **_CUSTOMER_DEFAULTS,
        "id": customer.id,
        "customer_no": customer.customer_no,
        "kind": customer.kind.value,
        "owner_id": customer.owner_id,
        "team_id": customer.team_id,
        "branch_id": customer.branch_id,
        "region": customer.region,
        "request_id": request_id or None,
        "request_fingerprint": fingerprint or None,
        "version": customer.version,
        "created_by": customer.created_by,
        "created_at": customer.created_at,
        "updated_at": customer.updated_at,
        **columns,
    }


def key_row(customer_id: str, wrapped: WrappedKey, at: dt.datetime) -> dict[str, Any]:
    """A customer's ``customer_keys`` row: its data key, wrapped."""
    return {"customer_id": customer_id, "kid": wrapped.kid, "wrapped": wrapped.wrapped, "created_at": at}


def history_row(
    customer_id: str, action: str, actor: str, at: dt.datetime, note: str, changes_json: str, row_id: str = ""
) -> dict[str, Any]:
    """A ``customer_history`` row; ``changes_json`` is its field changes as JSON (sensitive values masked); its id
    ``row_id``, else a new one."""
    return {
        "id": row_id or new_id(),
        "customer_id": customer_id,
        "action": action,
        "actor": actor,
        "occurred_at": at,
        "note": note,
        "changes": changes_json,
    }


def _changes_json(diff: Sequence[FieldChange]) -> str:
    return json.dumps([dataclasses.asdict(d) for d in diff], ensure_ascii=False)


def _encode_cursor(value: Any, last_id: str) -> str:
    if isinstance(value, dt.datetime):
        value = as_utc(value).isoformat()
    return base64.urlsafe_b64encode(json.dumps([value, last_id]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort_name: str) -> tuple[Any, str]:
    try:
        value, last_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if sort_name in ("created_at", "updated_at"):
            value = dt.datetime.fromisoformat(value)
        if not isinstance(last_id, str):
            raise ValueError("cursor id")
    except (ValueError, TypeError):
        raise InvalidArgument([FieldViolation("cursor", "is not a cursor this list returned")]) from None
    return value, last_id
