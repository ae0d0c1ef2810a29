"""Customer files over real gRPC with a real database (SQLite and PostgreSQL) and NATS: encryption at rest,
duplicates, search and lists in scope, updates with versions, history, ownership, events, erasure, key rotation."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import nats
import pytest
from google.protobuf import field_mask_pb2

from crm.common.v1 import envelope_pb2, paging_pb2
from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc, events_pb2
from crm_customer.server import SPEC
from crm_platform.auth_context import Identity, Scope
from crm_platform.grpc_client import parse_failure
from crm_testing.nats_server import NatsServer
from crm_testing.services import identity, running_service

ID_NUMBER = "110105199001011232"
MOBILE = "13800138000"
OTHER_ID = "11010519491231002X"
BROAD = ("customer:read", "customer:write", "customer:create", "customer:assign", "pii:reveal")
RM1 = identity("rm1")
RM2 = identity("rm2")
RM3 = identity("rm3", team_id="T2")
LEAD1 = identity("lead1", roles=("team_lead",), scope=Scope.TEAM, permissions=BROAD)
HEAD = identity("head", roles=("branch_head",), scope=Scope.BRANCH, team_id="", permissions=(*BROAD, "customer:erase"))
HEAD2 = identity("head2", roles=("branch_head",), scope=Scope.BRANCH, branch_id="SH001", team_id="T3", region="east")

pb = customer_service_pb2


def individual(id_number: str = ID_NUMBER, mobile: str = MOBILE, **extra: Any) -> pb.CreateCustomerRequest:
    return pb.CreateCustomerRequest(
        kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL,
        name="李明",
        profile=customer_pb2.CustomerProfile(
            id_type=customer_pb2.ID_TYPE_RESIDENT_ID,
            id_number=id_number,
            mobile=mobile,
            gender=customer_pb2.GENDER_MALE,
            **extra,
        ),
    )


async def failure(call: Any) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return parse_failure(err.value)


async def published(
    url: str, subject: str, subject_id: str, count: int, within: float = 15.0
) -> tuple[list[envelope_pb2.EventEnvelope], list[envelope_pb2.EventEnvelope]]:
    """Wait until ``count`` events about ``subject_id`` reached JetStream (the relay publishes after commit);
    return them and every envelope seen. The session's NATS holds other tests' customer events too."""
    nc = await nats.connect(url)
    seen: list[envelope_pb2.EventEnvelope] = []
    try:
        sub = await nc.jetstream().pull_subscribe(subject, durable=None, stream="CRM_CUSTOMER")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        idle_after_enough = 0
        while loop.time() < deadline and idle_after_enough < 1:
            try:
                seen.extend(envelope_pb2.EventEnvelope.FromString(m.data) for m in await sub.fetch(1000, timeout=0.5))
            except TimeoutError:  # nats-py raises its own or asyncio's under load
                if sum(e.subject_id == subject_id for e in seen) >= count:
                    idle_after_enough += 1  # enough, and nothing more came: no extra event hides behind
    finally:
        await nc.close()
    return [e for e in seen if e.subject_id == subject_id], seen


async def raw_database_bytes(db_url: str, tmp_path: Path) -> bytes:
    """Every byte the database holds for the customer tables: the SQLite files, or PostgreSQL rows as text."""
    if db_url.startswith("sqlite"):
        return b"".join(p.read_bytes() for p in tmp_path.glob("test.db*"))  # noqa: ASYNC240 - a test reading its own file
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch("SELECT c::text AS t FROM customers c UNION ALL SELECT h::text FROM customer_history h")
        outbox = await conn.fetch("SELECT envelope FROM outbox")
    finally:
        await conn.close()
    return b"".join(r["t"].encode() for r in rows) + b"".join(bytes(r["envelope"]) for r in outbox)


async def test_customer_file_life(db_url: str, private_nats: NatsServer, tmp_path: Path) -> None:
    async with running_service(SPEC, database_url=db_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)

        def call(method: str, request: Any, who: Identity) -> Any:
            return getattr(stub, method)(request, metadata=svc.md(who), timeout=5)

        full = individual(
            birth_date="1990-01-01",
            email="liming@example.com",
            address="北京市朝阳区建国路88号",
            occupation="engineer",
            tier=customer_pb2.TIER_GOLD,
            risk_appetite=customer_pb2.RISK_APPETITE_BALANCED,
            risk_assessed_on="2026-01-15",
            interests=["理财", "基金"],
        )
        full.profile.annual_income.amount = "500000"
        created = (await call("CreateCustomer", full, RM1)).customer
        p = created.profile
        assert (p.id_number, p.mobile, p.email) == ("110105********1232", "138****8000", "l***@example.com")
        assert p.address == "北京市朝阳区****" and p.risk_expires_on == "2027-01-15"
        assert p.annual_income.amount == "500000.00" and p.annual_income.currency == "CNY"
        assert created.owner_id == "rm1" and created.team_id == "T1" and created.version == 1

        # Encrypted at rest: neither the ID number nor the mobile appears anywhere in the stored bytes.
        stored = await raw_database_bytes(db_url, tmp_path)
        assert stored, "the database holds nothing?"
        for secret in (ID_NUMBER, MOBILE, "liming@example.com", "建国路88号"):
            assert secret.encode() not in stored, secret

        # Duplicates: named to the owner, anonymous to someone who may not see the existing customer.
        dup = await failure(call("CreateCustomer", individual(mobile="13900139000"), RM1))
        assert dup.code == grpc.StatusCode.ALREADY_EXISTS and dup.metadata["existing_id"] == created.id
        dup = await failure(call("CreateCustomer", individual(id_number=OTHER_ID), RM2))
        assert dup.code == grpc.StatusCode.ALREADY_EXISTS and "existing_id" not in dup.metadata
        assert dup.reason == "DUPLICATE_MOBILE"

        second = (await call("CreateCustomer", individual(OTHER_ID, "13900139000"), RM2)).customer

        # Search and lists: exact by ID number, mobile, name, customer number — always in scope.
        async def ids(who: Identity, **kw: Any) -> list[str]:
            reply = await call("ListCustomers", pb.ListCustomersRequest(**kw), who)
            return [c.id for c in reply.customers]

        assert await ids(RM1, id_number=ID_NUMBER.lower()) == [created.id]
        assert await ids(RM2, id_number=ID_NUMBER) == []
        assert await ids(RM2, mobile=MOBILE) == [] and await ids(RM2, name="李明") == [second.id]
        assert await ids(RM2, customer_no=created.customer_no) == []
        assert await ids(RM2, owner_id="rm1") == [] and await ids(RM2, tiers=[customer_pb2.TIER_GOLD]) == []
        assert await ids(HEAD, mobile="+86 138 0013 8000") == [created.id]
        assert await ids(HEAD, tiers=[customer_pb2.TIER_GOLD]) == [created.id]
        assert await ids(HEAD, risk_appetites=[customer_pb2.RISK_APPETITE_BALANCED]) == [created.id]
        assert await ids(HEAD, order_by="created_at") == [created.id, second.id]
        assert await ids(HEAD2, name="李明") == []
        page1 = await call("ListCustomers", pb.ListCustomersRequest(page=paging_pb2.PageRequest(page_size=1)), HEAD)
        assert [c.id for c in page1.customers] == [second.id] and page1.page.next_page_token
        page2 = await call(
            "ListCustomers",
            pb.ListCustomersRequest(page=paging_pb2.PageRequest(page_size=1, page_token=page1.page.next_page_token)),
            HEAD,
        )
        assert [c.id for c in page2.customers] == [created.id] and not page2.page.next_page_token

        # Updates: the version must match; history keeps masked before/after and the note.
        update = pb.UpdateCustomerRequest(
            customer_id=created.id,
            expected_version=1,
            profile=customer_pb2.CustomerProfile(mobile="13700137000", tier=customer_pb2.TIER_PLATINUM),
            update_mask=field_mask_pb2.FieldMask(paths=["mobile", "tier"]),
            note="customer called",
        )
        updated = (await call("UpdateCustomer", update, RM1)).customer
        assert updated.version == 2 and updated.profile.mobile == "137****7000"
        stale = await failure(call("UpdateCustomer", update, RM1))
        assert stale.code == grpc.StatusCode.ABORTED
        assert (await failure(call("UpdateCustomer", update, RM2))).code == grpc.StatusCode.NOT_FOUND
        bad = pb.UpdateCustomerRequest(
            customer_id=created.id,
            expected_version=2,
            profile=customer_pb2.CustomerProfile(birth_date="1985-05-05"),
            update_mask=field_mask_pb2.FieldMask(paths=["birth_date", "owner_id"]),
        )
        problem = await failure(call("UpdateCustomer", bad, RM1))
        assert problem.code == grpc.StatusCode.INVALID_ARGUMENT and {v.field for v in problem.violations} == {
            "owner_id"
        }
        history = (
            await call("ListCustomerHistory", pb.ListCustomerHistoryRequest(customer_id=created.id), RM1)
        ).changes
        assert [h.action for h in history] == ["updated", "created"]
        assert history[0].actor == "rm1" and history[0].note == "customer called"
        assert [(c.field, c.before, c.after) for c in history[0].changes] == [
            ("mobile", "138****8000", "137****7000"),
            ("tier", "gold", "platinum"),
        ]
        assert (
            await failure(call("ListCustomerHistory", pb.ListCustomerHistoryRequest(customer_id=created.id), RM2))
        ).code == grpc.StatusCode.NOT_FOUND

        # Ownership: a team lead within the team only; the branch head within the branch; reclaim to the pool.
        def assign(owner: str, team: str, branch: str = "BJ001", roles: tuple[str, ...] = ("rm",)) -> Any:
            return pb.AssignCustomerRequest(
                customer_id=created.id,
                owner_id=owner,
                owner_team_id=team,
                owner_branch_id=branch,
                owner_roles=roles,
                reason="rebalancing",
            )

        assert (
            await failure(call("AssignCustomer", assign("rm3", "T2"), LEAD1))
        ).code == grpc.StatusCode.PERMISSION_DENIED
        assert (
            await failure(call("AssignCustomer", assign("rm2", "T1"), RM1))
        ).code == grpc.StatusCode.PERMISSION_DENIED
        moved = (await call("AssignCustomer", assign("rm2", "T1"), LEAD1)).customer
        assert moved.owner_id == "rm2" and moved.team_id == "T1"
        wrong = await failure(call("AssignCustomer", assign("rm4", "T3", "SH001"), HEAD))
        assert wrong.code == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            await failure(call("AssignCustomer", assign("lobby", "", roles=("lobby_manager",)), HEAD))
        ).code == grpc.StatusCode.INVALID_ARGUMENT
        moved = (await call("AssignCustomer", assign("rm3", "T2"), HEAD)).customer
        assert moved.owner_id == "rm3" and moved.team_id == "T2"
        assert await ids(RM1, id_number=ID_NUMBER) == [] and await ids(RM3, id_number=ID_NUMBER) == [created.id]
        reclaim = pb.ReclaimCustomerRequest(customer_id=created.id, reason="RM left")
        assert (await failure(call("ReclaimCustomer", reclaim, RM3))).code == grpc.StatusCode.PERMISSION_DENIED
        pooled = (await call("ReclaimCustomer", reclaim, HEAD)).customer
        assert pooled.owner_id == "" and pooled.team_id == ""
        assert await ids(RM3, id_number=ID_NUMBER) == [] and await ids(HEAD, unassigned=True) == [created.id]

        # Events: created, updated (field names only), tier_changed, assigned — never a personal value.
        mine, envelopes = await published(private_nats.url, "crm.customer.customer.>", created.id, 6)
        assert [e.type.rsplit(".", 1)[1] for e in mine] == [
            "created",
            "updated",
            "tier_changed",
            "assigned",
            "assigned",
            "assigned",
        ]
        changed = events_pb2.CustomerUpdated()
        mine[1].payload.Unpack(changed)
        assert list(changed.changed_fields) == ["mobile", "tier"] and changed.version == 2
        assigned = events_pb2.CustomerAssigned()
        mine[4].payload.Unpack(assigned)
        assert (assigned.owner_id, assigned.team_id, assigned.branch_id, assigned.region) == (
            "rm3",
            "T2",
            "BJ001",
            "north",
        )
        assert assigned.previous_owner_id == "rm2"
        for envelope in envelopes:
            for secret in (ID_NUMBER, MOBILE, "13700137000", "liming"):
                assert secret.encode() not in envelope.SerializeToString()

        # Erasure: the data key is destroyed; the personal values are gone, the non-personal facts stay.
        assert (
            await failure(call("EraseCustomer", pb.EraseCustomerRequest(customer_id=created.id, reason="PIPL"), RM1))
        ).code == grpc.StatusCode.PERMISSION_DENIED
        erased = (
            await call("EraseCustomer", pb.EraseCustomerRequest(customer_id=created.id, reason="PIPL art. 47"), HEAD)
        ).customer
        assert erased.erased and erased.name == "[erased]" and erased.profile.tier == customer_pb2.TIER_PLATINUM
        assert erased.profile.id_number == "" and erased.profile.mobile == "" and erased.profile.birth_date == ""
        assert await ids(HEAD, id_number=ID_NUMBER) == []
        again = (await call("CreateCustomer", individual(), RM1)).customer  # the ID number is free again
        assert again.id != created.id
        history = (
            await call("ListCustomerHistory", pb.ListCustomerHistoryRequest(customer_id=created.id), HEAD)
        ).changes
        assert history[0].action == "erased" and all(c.before == c.after == "" for h in history for c in h.changes)


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def test_master_key_rotation_keeps_files_readable(
    sqlite_url: str, private_nats: NatsServer, tmp_path: Path
) -> None:
    old = f"k1:{_key()}"
    first = {"CRM_PII_MASTER_KEYS": old, "CRM_PII_ACTIVE_KEY_ID": "k1"}
    async with running_service(
        SPEC, database_url=sqlite_url, nats_url=private_nats.url, data_dir=tmp_path, extra_env=first
    ) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
        created = (await stub.CreateCustomer(individual(), metadata=svc.md(RM1), timeout=5)).customer
    rotated = {"CRM_PII_MASTER_KEYS": f"{old},k2:{_key()}", "CRM_PII_ACTIVE_KEY_ID": "k2"}
    async with running_service(
        SPEC, database_url=sqlite_url, nats_url=private_nats.url, data_dir=tmp_path, extra_env=rotated
    ) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
        got = (
            await stub.GetCustomer(pb.GetCustomerRequest(customer_id=created.id), metadata=svc.md(RM1), timeout=5)
        ).customer
        assert got.profile.id_number == "110105********1232"
        found = await stub.ListCustomers(pb.ListCustomersRequest(id_number=ID_NUMBER), metadata=svc.md(RM1), timeout=5)
        assert [c.id for c in found.customers] == [created.id]
        dup = await failure(stub.CreateCustomer(individual(mobile="13900139000"), metadata=svc.md(RM1), timeout=5))
        assert dup.code == grpc.StatusCode.ALREADY_EXISTS and dup.metadata["existing_id"] == created.id
        fresh = await stub.CreateCustomer(individual(OTHER_ID, "13900139000"), metadata=svc.md(RM1), timeout=5)
        assert fresh.customer.profile.mobile == "139****9000"
    # Without the old master key the old file cannot be read: the key really protects it.
    async with running_service(
        SPEC,
        database_url=sqlite_url,
        nats_url=private_nats.url,
        data_dir=tmp_path,
        extra_env={"CRM_PII_MASTER_KEYS": f"k3:{_key()}", "CRM_PII_ACTIVE_KEY_ID": "k3"},
    ) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
        unreadable = await failure(
            stub.GetCustomer(pb.GetCustomerRequest(customer_id=created.id), metadata=svc.md(RM1), timeout=5)
        )
        assert unreadable.code == grpc.StatusCode.INTERNAL


async def test_tags_filter_history_and_event(db_url: str, private_nats: NatsServer, tmp_path: Path) -> None:
    async with running_service(SPEC, database_url=db_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)

        def call(method: str, request: Any, who: Identity) -> Any:
            return getattr(stub, method)(request, metadata=svc.md(who), timeout=5)

        mine = (await call("CreateCustomer", individual(), RM1)).customer
        theirs = (await call("CreateCustomer", individual(OTHER_ID, "13900139000"), RM2)).customer
        tagged = (
            await call("TagCustomer", pb.TagCustomerRequest(customer_id=mine.id, add=["高净值", "潜力客户"]), RM1)
        ).customer
        assert list(tagged.tags) == sorted(["高净值", "潜力客户"]) and tagged.version == 2
        await call("TagCustomer", pb.TagCustomerRequest(customer_id=theirs.id, add=["高净值"]), RM2)
        retagged = (
            await call(
                "TagCustomer",
                pb.TagCustomerRequest(customer_id=mine.id, add=["关注理财产品"], remove=["潜力客户"]),
                RM1,
            )
        ).customer
        assert list(retagged.tags) == sorted(["高净值", "关注理财产品"])
        bad = await failure(call("TagCustomer", pb.TagCustomerRequest(customer_id=mine.id, add=["x" * 21]), RM1))
        assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
        denied = await failure(call("TagCustomer", pb.TagCustomerRequest(customer_id=mine.id, add=["x"]), RM2))
        assert denied.code == grpc.StatusCode.NOT_FOUND

        async def ids(who: Identity, *tags: str) -> list[str]:
            reply = await call("ListCustomers", pb.ListCustomersRequest(tags=list(tags)), who)
            return sorted(c.id for c in reply.customers)

        assert await ids(RM1, "高净值") == [mine.id]  # rm2's customer carries the tag too, out of rm1's scope
        assert await ids(HEAD, "高净值") == sorted([mine.id, theirs.id])
        assert await ids(HEAD, "高净值", "关注理财产品") == [mine.id]
        assert await ids(HEAD, "潜力客户") == []

        history = (await call("ListCustomerHistory", pb.ListCustomerHistoryRequest(customer_id=mine.id), RM1)).changes
        assert history[0].action == "tagged" and history[0].changes[0].field == "tags"
        assert history[0].changes[0].after == "关注理财产品, 高净值"

        tagged_events, _ = await published(private_nats.url, "crm.customer.customer.tagged", mine.id, 2)
        payloads = []
        for envelope in tagged_events:
            payload = events_pb2.CustomerTagged()
            envelope.payload.Unpack(payload)
            payloads.append((list(payload.added), list(payload.removed)))
        assert payloads == [(sorted(["高净值", "潜力客户"]), []), (["关注理财产品"], ["潜力客户"])]


async def test_segments_list_and_count_members_in_scope(db_url: str, private_nats: NatsServer, tmp_path: Path) -> None:
    async with running_service(SPEC, database_url=db_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)

        def call(method: str, request: Any, who: Identity) -> Any:
            return getattr(stub, method)(request, metadata=svc.md(who), timeout=5)

        gold = customer_pb2.TIER_GOLD
        young = (await call("CreateCustomer", individual(tier=gold), RM1)).customer  # born 1990
        old = (await call("CreateCustomer", individual(OTHER_ID, "13900139000", tier=gold), RM1)).customer  # 1949
        quiet = (
            await call(
                "CreateCustomer", individual("320311197707060018", "13700137000", tier=gold, do_not_disturb=True), RM1
            )
        ).customer
        other = (await call("CreateCustomer", individual("510108200002291239", "13600136000", tier=gold), RM2)).customer
        await call("CreateCustomer", individual("650102198511119990", "13500135000"), RM1)  # tier none

        segment = (
            await call(
                "CreateSegment",
                pb.CreateSegmentRequest(
                    name="金卡客户", filter=customer_pb2.SegmentFilter(tiers=[gold], do_not_disturb_excluded=True)
                ),
                RM1,
            )
        ).segment
        dup = await failure(call("CreateSegment", pb.CreateSegmentRequest(name="金卡客户"), RM2))
        assert dup.code == grpc.StatusCode.ALREADY_EXISTS
        bad = await failure(
            call(
                "CreateSegment",
                pb.CreateSegmentRequest(name="x", filter=customer_pb2.SegmentFilter(age_min=60, age_max=30)),
                RM1,
            )
        )
        assert bad.code == grpc.StatusCode.INVALID_ARGUMENT and bad.violations[0].field == "filter.age_max"

        async def members(who: Identity, segment_id: str) -> tuple[set[str], int]:
            reply = await call("ListSegmentMembers", pb.ListSegmentMembersRequest(segment_id=segment_id), who)
            return {c.id for c in reply.customers}, reply.total

        # Membership is computed in the asker's scope: the same segment, different members.
        assert await members(RM1, segment.id) == ({young.id, old.id}, 2)
        assert await members(RM2, segment.id) == ({other.id}, 1)
        assert await members(HEAD, segment.id) == ({young.id, old.id, other.id}, 3)
        assert quiet.id not in (await members(HEAD, segment.id))[0]
        missing = await failure(call("ListSegmentMembers", pb.ListSegmentMembersRequest(segment_id=segment.id), HEAD2))
        assert missing.code == grpc.StatusCode.NOT_FOUND  # another branch's segment
        listed = await call("ListSegments", pb.ListSegmentsRequest(), RM2)
        assert [s.name for s in listed.segments] == ["金卡客户"]

        # Age bands: over 60 today is the 1949 customer only.
        seniors = (
            await call(
                "CreateSegment",
                pb.CreateSegmentRequest(name="60岁以上", filter=customer_pb2.SegmentFilter(age_min=60)),
                HEAD,
            )
        ).segment
        assert await members(HEAD, seniors.id) == ({old.id}, 1)
        found = await call("ListCustomers", pb.ListCustomersRequest(age_min=30, age_max=40), HEAD)
        today = dt.date.today()
        in_band = {
            c.id
            for c in (await call("ListCustomers", pb.ListCustomersRequest(), HEAD)).customers
            if 30 <= _age(dt.date.fromisoformat(c.profile.birth_date), today) <= 40
        }
        assert young.id in in_band or today.year > 2030
        assert {c.id for c in found.customers} == in_band


def _age(born: dt.date, today: dt.date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


async def test_holdings_feed_aum_flags_and_signals(db_url: str, private_nats: NatsServer, tmp_path: Path) -> None:
    async with running_service(SPEC, database_url=db_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)

        def call(method: str, request: Any, who: Identity) -> Any:
            return getattr(stub, method)(request, metadata=svc.md(who), timeout=5)

        customer = (await call("CreateCustomer", individual(), RM1)).customer
        assert customer.aum.amount == "0.00" and not customer.familiar and not customer.value_first

        def holding(code: str, kind: int, amount: str, maturity: str = "") -> customer_pb2.Holding:
            h = customer_pb2.Holding(product_code=code, product_type=kind, maturity_date=maturity)
            h.amount.amount = amount
            return h

        soon = (dt.date.today() + dt.timedelta(days=30)).isoformat()
        snapshot = [
            holding("D1", customer_pb2.PRODUCT_TYPE_DEPOSIT, "800000"),
            holding("W1", customer_pb2.PRODUCT_TYPE_WEALTH, "1500000", soon),
            holding("L1", customer_pb2.PRODUCT_TYPE_LOAN, "300000"),
        ]
        request = pb.ReplaceHoldingsRequest(customer_id=customer.id, holdings=snapshot)
        assert (await failure(call("ReplaceHoldings", request, RM2))).code == grpc.StatusCode.NOT_FOUND
        reply = await call("ReplaceHoldings", request, RM1)
        assert reply.customer.aum.amount == "2300000.00" and reply.customer.product_count == 3
        assert reply.customer.familiar and reply.customer.value_first
        assert list(reply.signals) == ["large_inflow", "maturity_window", "tier_threshold_reached"]
        listed = await call("ListHoldings", pb.ListHoldingsRequest(customer_id=customer.id), RM1)
        assert [(h.product_code, h.amount.amount) for h in listed.holdings] == [
            ("D1", "800000.00"),
            ("L1", "300000.00"),
            ("W1", "1500000.00"),
        ]
        assert (
            await failure(call("ListHoldings", pb.ListHoldingsRequest(customer_id=customer.id), RM2))
        ).code == grpc.StatusCode.NOT_FOUND
        # The next snapshot replaces the whole set.
        smaller = pb.ReplaceHoldingsRequest(customer_id=customer.id, holdings=snapshot[:1])
        assert list((await call("ReplaceHoldings", smaller, RM1)).signals) == ["large_outflow"]

        changed_events, _ = await published(private_nats.url, "crm.customer.customer.holdings_changed", customer.id, 2)
        mine = []
        for envelope in changed_events:
            payload = events_pb2.CustomerHoldingsChanged()
            envelope.payload.Unpack(payload)
            mine.append(payload)
        assert [(p.aum_before.amount, p.aum_after.amount) for p in mine] == [
            ("0.00", "2300000.00"),
            ("2300000.00", "800000.00"),
        ]
        assert list(mine[0].maturing_product_codes) == ["W1"] and mine[0].eligible_tier == customer_pb2.TIER_PLATINUM


async def test_reveal_needs_permission_scope_and_purpose_and_is_kept(
    sqlite_url: str, private_nats: NatsServer, tmp_path: Path
) -> None:
    async with running_service(SPEC, database_url=sqlite_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
        revealer = identity("rm1", permissions=BROAD)
        executive = identity("exec", roles=("executive",), scope=Scope.REGION, permissions=("customer:read",))
        customer = (await stub.CreateCustomer(individual(), metadata=svc.md(revealer), timeout=5)).customer

        def reveal(who: Identity, fields: list[str], purpose: str = "客户来电核实身份") -> Any:
            request = pb.RevealCustomerRequest(customer_id=customer.id, fields=fields, purpose=purpose)
            return stub.RevealCustomer(request, metadata=svc.md(who), timeout=5)

        shown = await reveal(revealer, ["id_number", "mobile", "email"])
        assert dict(shown.values) == {"id_number": ID_NUMBER, "mobile": MOBILE}
        assert (await failure(reveal(executive, ["mobile"]))).code == grpc.StatusCode.PERMISSION_DENIED
        assert (await failure(reveal(identity("rm2", permissions=BROAD), ["mobile"]))).code == grpc.StatusCode.NOT_FOUND
        bad = await failure(reveal(revealer, ["name"], ""))
        assert {v.field for v in bad.violations} == {"fields", "purpose"}
        history = await stub.ListCustomerHistory(
            pb.ListCustomerHistoryRequest(customer_id=customer.id), metadata=svc.md(revealer), timeout=5
        )
        entry = history.changes[0]
        assert entry.action == "revealed" and entry.note == "客户来电核实身份" and entry.actor == "rm1"
        assert [c.field for c in entry.changes] == ["id_number", "mobile", "email"]
        assert all(not c.before and not c.after for c in entry.changes)
