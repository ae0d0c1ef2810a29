"""Lists and searches: keyset pagination across pages (ties on the sort value, rows added meanwhile) on SQLite and
PostgreSQL; on PostgreSQL the asyncpg list path (``store/fastread.py``) answers, filter by filter and scope by
scope, what the SQLAlchemy store answers; name prefixes (wildcard characters, scope, the last code point)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import insert, update

from crm_customer.config import DEV_MASTER_KEYS
from crm_customer.domain import Customer, masked, register_customer
from crm_customer.servicer import profile_to_proto
from crm_customer.store import CustomerFilter, CustomerStore
from crm_customer.store.fastread import CustomerReads, prefix_upper_bound
from crm_customer.store.tables import customer_tags, customers
from crm_platform.auth_context import Identity, Scope
from crm_platform.db import create_engine, normalise_url, session_factory
from crm_platform.fastread import ReadPool, asyncpg_dsn
from crm_platform.identifiers import resident_id_check_char
from crm_platform.migrations import migrate
from crm_platform.outbox import Outbox
from crm_platform.pii import Keyring
from crm_platform.scope import in_scope
from crm_testing.services import identity

RM1 = identity("rm1")
RM2 = identity("rm2")
RM3 = identity("rm3", team_id="T2")
RM4 = identity("rm4", team_id="T3", branch_id="SH001", region="east")
HEAD = identity("head", roles=("branch_head",), scope=Scope.BRANCH, team_id="")
LEAD1 = identity("lead1", roles=("team_lead",), scope=Scope.TEAM)
EXEC = identity("exec", roles=("executive",), scope=Scope.REGION, team_id="", branch_id="")
ALL = identity("all", roles=("system",), scope=Scope.ALL)
NOBODY = identity("auditor", roles=("auditor",), scope=Scope.NONE, team_id="", branch_id="", region="")
CREATORS = (RM1, RM1, RM2, RM3, RM4, HEAD)  # HEAD creates into the branch pool (no owner)
READERS = (RM1, RM2, RM3, RM4, HEAD, LEAD1, EXEC, ALL, NOBODY)
NAMES = (
    "李明",
    "李明",
    "李_华%",
    "李\\强",
    "王芳",
    "王",
    "张海英",
    "张海",
    "张伟",
    "\U0010ffff甲",
    "\U0010ffff",
    "Zoe",
)
NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
TODAY = NOW.date()


def _resident_id(sequence: int) -> str:
    body = f"11010519900101{sequence:03d}"
    return body + resident_id_check_char(body)


@dataclasses.dataclass
class World:
    store: CustomerStore
    reads: CustomerReads | None  # the asyncpg path (PostgreSQL only)
    rows: list[Customer]  # every customer as the store reads it with the widest scope


async def _world(url: str) -> AsyncIterator[World]:
    engine = create_engine(normalise_url(url))
    await migrate(engine, "crm_customer")
    store = CustomerStore(session_factory(engine), Outbox("customer"), Keyring.from_spec(DEV_MASTER_KEYS, "dev"))
    pool = None
    dsn = asyncpg_dsn(engine.url)
    if dsn is not None:
        pool = ReadPool(dsn, size=2)
        await pool.open()
    rng = random.Random(4)
    created: list[Customer] = []
    for n in range(48):
        who = CREATORS[n % len(CREATORS)]
        profile: dict[str, Any] = {"name": NAMES[n % len(NAMES)]}
        if n % 5 == 0:
            profile.update(id_type="resident_id", id_number=_resident_id(n), mobile=f"138{n:08d}")
        created.append(await store.create(who, register_customer(who, "individual", profile, NOW), ""))
    async with store._sessions() as session, session.begin():
        for n, customer in enumerate(created):
            # Ties on purpose: groups of three share a creation time (and names repeat), so the id decides.
            await session.execute(
                update(customers)
                .where(customers.c.id == customer.id)
                .values(
                    created_at=NOW - dt.timedelta(hours=n // 3),
                    updated_at=NOW - dt.timedelta(minutes=rng.randrange(5)),
                    tier=rng.choice(("none", "gold", "platinum", "diamond")),
                    risk_appetite=rng.choice(("", "conservative", "balanced", "aggressive")),
                    birth_date=dt.date(1960 + rng.randrange(45), 1 + rng.randrange(12), 1 + rng.randrange(28)),
                    do_not_disturb=rng.random() < 0.3,
                    kind="corporate" if n % 7 == 3 else "individual",
                    last_contact_at=None if n % 4 == 0 else NOW - dt.timedelta(days=rng.randrange(200)),
                    merged_into="merged-into-someone" if n == 11 else None,
                )
            )
            for tag in ("vip", "高净值"):
                if rng.random() < 0.4:
                    await session.execute(
                        insert(customer_tags).values(customer_id=customer.id, tag=tag, created_by="rm1", created_at=NOW)
                    )
    await store.erase(RM1, await store.get(RM1, created[6].id), "request of the customer", NOW)
    rows, _ = await store.list(ALL, CustomerFilter(), 500, "")
    try:
        yield World(store, CustomerReads(store, pool) if pool else None, rows)
    finally:
        if pool is not None:
            await pool.close()
        await engine.dispose()


@pytest.fixture
async def world(db_url: str) -> AsyncIterator[World]:
    async for made in _world(db_url):
        yield made


@pytest.fixture
async def pg_world(postgres_url: str) -> AsyncIterator[World]:
    async for made in _world(postgres_url):
        yield made


async def _pages(lister: Any, who: Identity, where: CustomerFilter, size: int) -> list[list[Customer]]:
    pages, cursor = [], ""
    while True:
        page, cursor = await lister(who, where, size, cursor)
        pages.append(page)
        if not cursor:
            return pages
        assert len(pages) < 100, "the cursor does not advance"


# Every filter of CustomerFilter with values the world holds (a test checks the list is complete).
PREFIXES = ("李", "李_", "李\\", "李明", "张海", "王", "\U0010ffff", "Z", "z", "%", "无")
FILTERS: dict[str, list[dict[str, Any]]] = {
    "name": [{"name": "李明"}, {"name": "李_华%"}],
    "name_prefix": [{"name_prefix": p} for p in PREFIXES],
    "id_number": [{"id_number": _resident_id(10)}],
    "mobile": [{"mobile": "13800000015"}],
    "customer_no": [],  # filled in from the world (numbers are generated)
    "tiers": [{"tiers": ("gold",)}, {"tiers": ("diamond", "platinum")}],
    "tags": [{"tags": ("vip",)}, {"tags": ("vip", "高净值")}],
    "risk_appetites": [{"risk_appetites": ("balanced",)}, {"risk_appetites": ("conservative", "aggressive")}],
    "owner_id": [{"owner_id": "rm1"}],
    "unassigned": [{"unassigned": True}],
    "branch_id": [{"branch_id": "SH001"}],
    "team_id": [{"team_id": "T1"}],
    "kind": [{"kind": "corporate"}],
    "created_from": [{"created_from": NOW - dt.timedelta(hours=7)}],
    "created_to": [{"created_to": NOW - dt.timedelta(hours=7)}],
    "age_min": [{"age_min": 40}, {"age_min": 30, "age_max": 45}],
    "age_max": [{"age_max": 35}],
    "exclude_do_not_disturb": [{"exclude_do_not_disturb": True}],
    "live_only": [{"live_only": True}],
    "last_contact_before": [{"last_contact_before": NOW - dt.timedelta(days=90)}],
}
NOT_FILTERS = {"order_by", "today"}


def test_every_filter_is_exercised() -> None:
    """A filter added to CustomerFilter must be written into the asyncpg path too: this fails until it is
    added here, where the next test checks both paths answer alike."""
    assert set(FILTERS) == {f.name for f in dataclasses.fields(CustomerFilter)} - NOT_FILTERS


@pytest.mark.parametrize("sort", ["-created_at", "created_at", "name", "-name", "-updated_at", "customer_no"])
async def test_pages_hold_each_match_once_in_order(world: World, sort: str) -> None:
    """Keyset pagination: pages of 4 put together are the one big page, no customer twice or missing (ties on
    the sort value broken by id); merged duplicates are left out."""
    for who in (HEAD, RM1, EXEC):
        where = CustomerFilter(order_by=sort, today=TODAY)
        whole, cursor = await world.store.list(who, where, 500, "")
        assert cursor == ""
        assert whole and all(c.merged_into == "" for c in whole)
        assert {c.id for c in whole} == {c.id for c in world.rows if in_scope(who, **_owners(c))}
        if sort.lstrip("-") in ("created_at", "updated_at"):  # (text orders are the database collation's)
            keys = [(getattr(c, sort.lstrip("-")), c.id) for c in whole]
            assert keys == sorted(keys, reverse=sort.startswith("-"))
        paged = [c for page in await _pages(world.store.list, who, where, 4) for c in page]
        assert [c.id for c in paged] == [c.id for c in whole]


async def test_a_customer_added_between_pages_moves_nothing(world: World) -> None:
    """Newest first, a customer created while someone pages sorts before the pages already read: the pages
    after it neither repeat nor skip anyone."""
    where = CustomerFilter(order_by="-created_at", today=TODAY)
    before, _ = await world.store.list(HEAD, where, 500, "")
    seen, cursor = await world.store.list(HEAD, where, 5, "")
    await world.store.create(HEAD, register_customer(HEAD, "individual", {"name": "新客户"}, NOW), "")
    while cursor:
        page, cursor = await world.store.list(HEAD, where, 5, cursor)
        seen += page
    assert [c.id for c in seen] == [c.id for c in before]


@pytest.mark.postgres
async def test_the_asyncpg_path_answers_what_the_store_answers(pg_world: World) -> None:
    reads = pg_world.reads
    assert reads is not None
    numbers = [c.customer_no for c in pg_world.rows[:2]]
    cases = [dict(c) for values in FILTERS.values() for c in values] + [{"customer_no": n} for n in numbers]
    cases += [{"tiers": ("gold",), "name_prefix": "李", "tags": ("vip",)}, {}]
    nonempty = 0
    for case in cases:
        for sort, readers in (("-created_at", READERS), ("name", (HEAD, ALL)), ("-updated_at", (RM1, EXEC))):
            where = CustomerFilter(order_by=sort, today=TODAY, **case)
            for who in readers:
                store_pages = await _pages(pg_world.store.list, who, where, 4)
                fast_pages = await _pages(reads.list, who, where, 4)
                assert fast_pages == store_pages, (who.user_id, case, sort)
                nonempty += bool(store_pages[0])
    assert nonempty > len(cases)  # the comparisons were about something


@pytest.mark.postgres
async def test_prefix_search_in_scope_on_the_asyncpg_path(pg_world: World) -> None:
    """Prefixes are plain text (``_``, ``%``, ``\\`` are no wildcards), case-sensitive, inside the scope; a
    prefix of U+10FFFF characters (no upper bound for the range) still matches."""
    reads = pg_world.reads
    assert reads is not None
    for prefix in PREFIXES:
        for who in (RM1, RM4, HEAD, EXEC, ALL):
            found, _ = await reads.list(who, CustomerFilter(name_prefix=prefix, today=TODAY), 500, "")
            expected = {
                c.id for c in pg_world.rows if c.profile.name.startswith(prefix) and in_scope(who, **_owners(c))
            }
            assert {c.id for c in found} == expected, (prefix, who.user_id)
    everyone, _ = await reads.list(ALL, CustomerFilter(name_prefix="李_", today=TODAY), 500, "")
    assert {c.profile.name for c in everyone} == {"李_华%"}
    assert {c.profile.name for c in (await reads.list(ALL, CustomerFilter(name_prefix="\U0010ffff"), 500, ""))[0]} == {
        "\U0010ffff甲",
        "\U0010ffff",
    }


def test_prefix_upper_bound() -> None:
    assert prefix_upper_bound("张") == "弡"
    assert prefix_upper_bound("ab") == "ac"
    assert prefix_upper_bound("a\U0010ffff") == "b"
    assert prefix_upper_bound("\ud7ff") == "\ue000"  # no surrogates in UTF-8
    assert prefix_upper_bound("\U0010ffff\U0010ffff") is None
    for prefix in ("张", "李_", "a\U0010ffff", "Zz"):
        upper = prefix_upper_bound(prefix)
        assert upper is not None
        for name in (prefix, prefix + "\U0010ffff", prefix + "海英"):
            assert prefix.encode() <= name.encode() < upper.encode()


async def test_list_answers_mask_what_masked_masks(world: World) -> None:
    """The list's wire form masks without building a masked profile: the same masks as domain.masked."""
    full = [c for c in world.rows if c.profile.id_number]
    assert full
    for customer in full:
        assert profile_to_proto(customer.profile, mask=True) == profile_to_proto(masked(customer.profile))
        assert profile_to_proto(customer.profile, mask=True).mobile.count("*") == 4


def _owners(c: Customer) -> dict[str, str]:
    return {"owner": c.owner_id, "team": c.team_id, "branch": c.branch_id, "region": c.region}
