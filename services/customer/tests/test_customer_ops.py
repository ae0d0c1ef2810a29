"""Customer operations over real gRPC with a real database (SQLite and PostgreSQL) and NATS: bulk assignment,
the batch holdings feed, the managed tag catalog, and last contact learnt from interaction events."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
from google.protobuf import timestamp_pb2
from test_customer_files import BROAD, HEAD, HEAD2, LEAD1, OTHER_ID, RM1, RM2, RM3, failure, individual, published

from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc, events_pb2
from crm.interaction.v1 import events_pb2 as interaction_events
from crm.interaction.v1 import interaction_pb2
from crm_customer.server import SPEC
from crm_platform.auth_context import Identity, Scope
from crm_platform.outbox import make_envelope
from crm_testing.nats_server import NatsServer
from crm_testing.services import identity, running_service

pb = customer_service_pb2
TAGGERS = (*BROAD, "tag:read")
HEAD_TAGS = identity(
    "head", roles=("branch_head",), scope=Scope.BRANCH, team_id="", permissions=(*TAGGERS, "tag:manage")
)
ADMIN = identity("admin", roles=("admin",), scope=Scope.NONE, branch_id="", team_id="", permissions=("tag:manage",))
RM1_TAGS = identity("rm1", permissions=TAGGERS)
LEAD_TAGS = identity("lead1", roles=("team_lead",), scope=Scope.TEAM, permissions=TAGGERS)
HEAD2_TAGS = identity(
    "head2",
    roles=("branch_head",),
    scope=Scope.BRANCH,
    branch_id="SH001",
    team_id="T3",
    region="east",
    permissions=(*TAGGERS, "tag:manage"),
)


def _holding(code: str, kind: int, amount: str, maturity: str = "") -> customer_pb2.Holding:
    h = customer_pb2.Holding(product_code=code, product_type=kind, maturity_date=maturity)
    h.amount.amount = amount
    return h


async def test_bulk_assign_outcome_per_customer_with_history_and_events(
    db_url: str, private_nats: NatsServer, tmp_path: Path
) -> None:
    async with running_service(SPEC, database_url=db_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)

        def call(method: str, request: Any, who: Identity) -> Any:
            return getattr(stub, method)(request, metadata=svc.md(who), timeout=5)

        mine = (await call("CreateCustomer", individual(), RM1)).customer
        theirs = (await call("CreateCustomer", individual(OTHER_ID, "13900139000"), RM2)).customer
        t2 = (await call("CreateCustomer", individual("320311197707060018", "13700137000"), RM3)).customer
        far = (await call("CreateCustomer", individual("510108200002291239", "13600136000"), HEAD2)).customer

        def bulk(ids: list[str], owner: str, team: str, roles: tuple[str, ...] = ("rm",)) -> Any:
            return pb.AssignCustomersRequest(
                customer_ids=ids,
                owner_id=owner,
                owner_team_id=team,
                owner_branch_id="BJ001",
                owner_roles=roles,
                reason="二次分配",
            )

        # A team lead: only within the team; another team's customer is not even visible.
        reply = await call("AssignCustomers", bulk([mine.id, t2.id], "rm3", "T2"), LEAD1)
        assert [(r.customer_id, r.outcome) for r in reply.results] == [(mine.id, "forbidden"), (t2.id, "not_found")]
        reply = await call("AssignCustomers", bulk([mine.id, theirs.id], "rm2", "T1"), LEAD1)
        assert [(r.outcome, r.version) for r in reply.results] == [("assigned", 2), ("already_owner", 0)]

        # The branch head: the whole branch; another branch's customer and an unknown id are not found.
        reply = await call("AssignCustomers", bulk([mine.id, theirs.id, far.id, "nope", t2.id], "rm3", "T2"), HEAD)
        assert [r.outcome for r in reply.results] == ["assigned", "assigned", "not_found", "not_found", "already_owner"]
        assert all(r.message for r in reply.results if r.outcome != "assigned")
        lobby = await call("AssignCustomers", bulk([mine.id], "lobby", "", ("lobby_manager",)), HEAD)
        assert lobby.results[0].outcome == "invalid" and lobby.results[0].violations[0].field == "owner_id"

        async def ids(who: Identity) -> set[str]:
            return {c.id for c in (await call("ListCustomers", pb.ListCustomersRequest(), who)).customers}

        assert await ids(RM3) == {mine.id, theirs.id, t2.id} and await ids(RM1) == set() and await ids(RM2) == set()

        # The whole request is refused when it cannot apply to any customer.
        assert (await failure(call("AssignCustomers", bulk([mine.id], "rm1", "T1"), RM1))).code == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        for bad in ([], [mine.id, mine.id], ["x"] * 501):
            problem = await failure(call("AssignCustomers", bulk(bad, "rm1", "T1"), HEAD))
            assert problem.code == grpc.StatusCode.INVALID_ARGUMENT and problem.violations[0].field == "customer_ids"

        history = (await call("ListCustomerHistory", pb.ListCustomerHistoryRequest(customer_id=mine.id), HEAD)).changes
        assert [(h.action, h.note) for h in history[:2]] == [("assigned", "二次分配"), ("assigned", "二次分配")]
        assert [(c.field, c.before, c.after) for c in history[0].changes] == [
            ("owner_id", "rm2", "rm3"),
            ("team_id", "T1", "T2"),
        ]
        events, _ = await published(private_nats.url, "crm.customer.customer.assigned", mine.id, 2)
        owners = []
        for envelope in events:
            payload = events_pb2.CustomerAssigned()
            envelope.payload.Unpack(payload)
            owners.append((payload.previous_owner_id, payload.owner_id, payload.reason))
        assert owners == [("rm1", "rm2", "二次分配"), ("rm2", "rm3", "二次分配")]
        theirs_events, _ = await published(private_nats.url, "crm.customer.customer.assigned", theirs.id, 1)
        assert len(theirs_events) == 1


async def test_batch_holdings_feed_outcomes_signals_and_events(
    db_url: str, private_nats: NatsServer, tmp_path: Path
) -> None:
    async with running_service(SPEC, database_url=db_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)

        def call(method: str, request: Any, who: Identity) -> Any:
            return getattr(stub, method)(request, metadata=svc.md(who), timeout=5)

        rich = (await call("CreateCustomer", individual(), RM1)).customer
        plain = (await call("CreateCustomer", individual(OTHER_ID, "13900139000"), RM1)).customer
        theirs = (await call("CreateCustomer", individual("320311197707060018", "13700137000"), RM2)).customer
        soon = (dt.date.today() + dt.timedelta(days=20)).isoformat()
        feed = pb.ReplaceHoldingsBatchRequest(
            snapshots=[
                pb.HoldingsSnapshot(
                    customer_id=rich.id,
                    holdings=[
                        _holding("D1", customer_pb2.PRODUCT_TYPE_DEPOSIT, "900000"),
                        _holding("W1", customer_pb2.PRODUCT_TYPE_WEALTH, "1200000", soon),
                    ],
                ),
                pb.HoldingsSnapshot(customer_id=theirs.id, holdings=[]),
                pb.HoldingsSnapshot(
                    customer_id=plain.id,
                    holdings=[
                        _holding("D1", customer_pb2.PRODUCT_TYPE_DEPOSIT, "-5"),
                        _holding("D1", customer_pb2.PRODUCT_TYPE_DEPOSIT, "5"),
                    ],
                ),
                pb.HoldingsSnapshot(customer_id="unknown", holdings=[]),
            ]
        )
        results = (await call("ReplaceHoldingsBatch", feed, RM1)).results
        assert [(r.customer_id, r.outcome) for r in results] == [
            (rich.id, "updated"),
            (theirs.id, "not_found"),
            (plain.id, "invalid"),
            ("unknown", "not_found"),
        ]
        assert results[0].aum.amount == "2100000.00"
        assert list(results[0].signals) == ["large_inflow", "maturity_window", "tier_threshold_reached"]
        assert {(v.field, v.description) for v in results[2].violations} >= {
            ("holdings[0].amount", "must be a non-negative amount with at most 2 decimals"),
            ("holdings[1].product_code", "appears twice"),
        }
        # The invalid snapshot changed nothing; the valid one is stored as the single route stores it.
        got = (await call("ListHoldings", pb.ListHoldingsRequest(customer_id=plain.id), RM1)).holdings
        assert list(got) == []
        stored = (await call("GetCustomer", pb.GetCustomerRequest(customer_id=rich.id), RM1)).customer
        assert stored.aum.amount == "2100000.00" and stored.product_count == 2 and stored.value_first

        # The next feed: a large outflow for the same customer.
        smaller = pb.ReplaceHoldingsBatchRequest(
            snapshots=[
                pb.HoldingsSnapshot(
                    customer_id=rich.id, holdings=[_holding("D1", customer_pb2.PRODUCT_TYPE_DEPOSIT, "100000")]
                )
            ]
        )
        assert list((await call("ReplaceHoldingsBatch", smaller, RM1)).results[0].signals) == ["large_outflow"]
        repeated = pb.ReplaceHoldingsBatchRequest(
            snapshots=[pb.HoldingsSnapshot(customer_id=rich.id), pb.HoldingsSnapshot(customer_id=rich.id)]
        )
        problem = await failure(call("ReplaceHoldingsBatch", repeated, RM1))
        assert problem.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in problem.violations] == ["snapshots[1].customer_id"]
        assert (await failure(call("ReplaceHoldingsBatch", pb.ReplaceHoldingsBatchRequest(), RM1))).code == (
            grpc.StatusCode.INVALID_ARGUMENT
        )

        changed, _ = await published(private_nats.url, "crm.customer.customer.holdings_changed", rich.id, 2)
        payloads = []
        for envelope in changed:
            payload = events_pb2.CustomerHoldingsChanged()
            envelope.payload.Unpack(payload)
            payloads.append((payload.aum_before.amount, payload.aum_after.amount, list(payload.signals)))
        assert payloads == [
            ("0.00", "2100000.00", ["large_inflow", "maturity_window", "tier_threshold_reached"]),
            ("2100000.00", "100000.00", ["large_outflow"]),
        ]
        none_for_invalid, _ = await published(
            private_nats.url, "crm.customer.customer.holdings_changed", plain.id, 0, within=1.0
        )
        assert none_for_invalid == []


async def test_managed_tag_catalog_and_who_may_apply(db_url: str, private_nats: NatsServer, tmp_path: Path) -> None:
    async with running_service(SPEC, database_url=db_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)

        def call(method: str, request: Any, who: Identity) -> Any:
            return getattr(stub, method)(request, metadata=svc.md(who), timeout=5)

        def define(name: str, roles: tuple[str, ...] = (), description: str = "") -> Any:
            return pb.DefineManagedTagRequest(name=name, description=description, applicable_roles=roles)

        bank_wide = (await call("DefineManagedTag", define("高净值", description="AUM ≥ 600万"), ADMIN)).tag
        assert bank_wide.branch_id == "" and bank_wide.created_by == "admin"
        payroll = (await call("DefineManagedTag", define("代发工资", ("branch_head", "team_lead")), HEAD_TAGS)).tag
        assert payroll.branch_id == "BJ001" and list(payroll.applicable_roles) == ["branch_head", "team_lead"]
        assert (await failure(call("DefineManagedTag", define("高净值"), HEAD_TAGS))).code == (
            grpc.StatusCode.ALREADY_EXISTS
        )
        assert (await failure(call("DefineManagedTag", define("x"), RM1_TAGS))).code == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        bad = await failure(call("DefineManagedTag", define("a,b", ("lobby_manager",), "d" * 201), HEAD_TAGS))
        assert {v.field for v in bad.violations} == {"name", "applicable_roles", "description"}

        async def catalog(who: Identity) -> list[str]:
            return [t.name for t in (await call("ListManagedTags", pb.ListManagedTagsRequest(), who)).tags]

        assert await catalog(RM1_TAGS) == sorted(["高净值", "代发工资"])
        assert await catalog(HEAD2_TAGS) == ["高净值"]  # another branch sees only the bank-wide catalog
        assert (await failure(call("ListManagedTags", pb.ListManagedTagsRequest(), RM1))).code == (
            grpc.StatusCode.PERMISSION_DENIED
        )

        customer = (await call("CreateCustomer", individual(), RM1_TAGS)).customer

        def tag(who: Identity, **kw: Any) -> Any:
            return call("TagCustomer", pb.TagCustomerRequest(customer_id=customer.id, **kw), who)

        unknown = await failure(tag(RM1_TAGS, add_managed=["高净值", "不存在"]))
        assert unknown.code == grpc.StatusCode.INVALID_ARGUMENT
        assert [(v.field, v.description) for v in unknown.violations] == [
            ("add_managed[1]", "'不存在' is not in the managed tag catalog")
        ]
        sidestep = await failure(tag(RM1_TAGS, add=["代发工资"]))
        assert [v.field for v in sidestep.violations] == ["add[0]"]
        assert (await failure(tag(RM1_TAGS, add_managed=["代发工资"]))).code == grpc.StatusCode.PERMISSION_DENIED
        tagged = (await tag(RM1_TAGS, add=["爱好高尔夫"], add_managed=["高净值"])).customer
        assert list(tagged.tags) == sorted(["爱好高尔夫", "高净值"])
        tagged = (await tag(LEAD_TAGS, add_managed=["代发工资"])).customer
        assert "代发工资" in tagged.tags
        assert (await failure(tag(RM1_TAGS, remove=["代发工资"]))).code == grpc.StatusCode.PERMISSION_DENIED
        # Another branch's head cannot even see the customer.
        assert (await failure(tag(HEAD2_TAGS, add_managed=["代发工资"]))).code == grpc.StatusCode.NOT_FOUND
        found = await call("ListCustomers", pb.ListCustomersRequest(tags=["代发工资", "高净值"]), RM1_TAGS)
        assert [c.id for c in found.customers] == [customer.id]

        tagged_events, _ = await published(private_nats.url, "crm.customer.customer.tagged", customer.id, 2)
        managed = []
        for envelope in tagged_events:
            payload = events_pb2.CustomerTagged()
            envelope.payload.Unpack(payload)
            managed.append((list(payload.added), list(payload.managed)))
        assert managed == [(sorted(["爱好高尔夫", "高净值"]), ["高净值"]), (["代发工资"], ["代发工资"])]
        defined, _ = await published(private_nats.url, "crm.customer.managed_tag.defined", "BJ001/代发工资", 1)
        payload = events_pb2.ManagedTagDefined()
        defined[0].payload.Unpack(payload)
        assert (payload.name, payload.branch_id) == ("代发工资", "BJ001")


async def _log_contact(url: str, customer_id: str, at: dt.datetime, *, legacy: bool = False) -> None:
    """Publish an ``interaction.logged`` event as the interaction service's relay would: a contact that took
    place at ``at``, logged now. ``legacy``: as published before the payload carried the contact time (the
    envelope's time, when it was logged, is then ``at``)."""
    message = interaction_events.InteractionLogged(
        interaction_id=f"i-{customer_id}-{at.timestamp():.0f}",
        customer_id=customer_id,
        channel=interaction_pb2.CHANNEL_PHONE,
        logged_by="rm1",
    )
    if not legacy:
        message.occurred_at.FromDatetime(at)
    subject = "crm.interaction.interaction.logged"
    envelope = make_envelope(subject, "interaction", message, subject_id=message.interaction_id, actor="rm1")
    if legacy:
        envelope.occurred_at.FromDatetime(at)
    nc = await nats.connect(url)
    try:
        await nc.jetstream().publish(subject, envelope.SerializeToString(), headers={"Nats-Msg-Id": envelope.id})
    finally:
        await nc.close()


def _stamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


async def test_last_contact_from_interaction_events_filters_lists_and_segments(
    db_url: str, private_nats: NatsServer, tmp_path: Path
) -> None:
    async with running_service(SPEC, database_url=db_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)

        def call(method: str, request: Any, who: Identity) -> Any:
            return getattr(stub, method)(request, metadata=svc.md(who), timeout=5)

        called = (await call("CreateCustomer", individual(), RM1)).customer
        never = (await call("CreateCustomer", individual(OTHER_ID, "13900139000"), RM1)).customer
        theirs = (await call("CreateCustomer", individual("320311197707060018", "13700137000"), RM2)).customer
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        week_ago = now - dt.timedelta(days=7)
        await _log_contact(private_nats.url, called.id, week_ago)
        await _log_contact(private_nats.url, theirs.id, now - dt.timedelta(days=60), legacy=True)

        async def last_contact(customer_id: str, expected: dt.datetime) -> customer_pb2.Customer:
            for _ in range(200):  # the durable consumer applies the event shortly after it is stored
                got = (await call("GetCustomer", pb.GetCustomerRequest(customer_id=customer_id), HEAD)).customer
                if got.HasField("last_contact_at") and got.last_contact_at.ToDatetime(tzinfo=dt.UTC) == expected:
                    return got
                await asyncio.sleep(0.05)
            pytest.fail(f"last contact of {customer_id} never became {expected}")

        got = await last_contact(called.id, week_ago)
        assert got.version == called.version  # a derived fact, not a change of the file
        await last_contact(theirs.id, now - dt.timedelta(days=60))
        # A later contact moves it forward; a late older event never moves it back.
        await _log_contact(private_nats.url, called.id, now - dt.timedelta(days=3))
        await last_contact(called.id, now - dt.timedelta(days=3))
        await _log_contact(private_nats.url, called.id, now - dt.timedelta(days=30))
        await _log_contact(private_nats.url, never.id, now - dt.timedelta(days=90))
        await last_contact(never.id, now - dt.timedelta(days=90))  # consumed in order: the older one is done too
        await last_contact(called.id, now - dt.timedelta(days=3))

        async def ids(who: Identity, before: dt.datetime) -> set[str]:
            reply = await call("ListCustomers", pb.ListCustomersRequest(last_contact_before=_stamp(before)), who)
            return {c.id for c in reply.customers}

        fresh = (await call("CreateCustomer", individual("510108200002291239", "13600136000"), RM1)).customer
        assert await ids(RM1, now - dt.timedelta(days=10)) == {never.id, fresh.id}  # never contacted counts
        assert await ids(RM1, now) == {called.id, never.id, fresh.id}
        assert await ids(RM2, now) == {theirs.id}  # scope holds under the filter
        assert await ids(HEAD, now - dt.timedelta(days=100)) == {fresh.id}

        segment = (
            await call(
                "CreateSegment",
                pb.CreateSegmentRequest(name="30天未联系", filter=customer_pb2.SegmentFilter(no_contact_days=30)),
                RM1,
            )
        ).segment
        assert segment.filter.no_contact_days == 30

        async def members(who: Identity, segment_id: str) -> tuple[set[str], int]:
            reply = await call("ListSegmentMembers", pb.ListSegmentMembersRequest(segment_id=segment_id), who)
            return {c.id for c in reply.customers}, reply.total

        assert await members(RM1, segment.id) == ({never.id, fresh.id}, 2)
        assert await members(RM2, segment.id) == ({theirs.id}, 1)
        fixed = (
            await call(
                "CreateSegment",
                pb.CreateSegmentRequest(
                    name="季度未联系",
                    filter=customer_pb2.SegmentFilter(last_contact_before=_stamp(now - dt.timedelta(days=45))),
                ),
                HEAD,
            )
        ).segment
        assert fixed.filter.last_contact_before.ToDatetime(tzinfo=dt.UTC) == now - dt.timedelta(days=45)
        assert await members(HEAD, fixed.id) == ({never.id, fresh.id, theirs.id}, 3)
        assert await members(RM1, fixed.id) == ({never.id, fresh.id}, 2)


async def test_name_prefix_search_stays_in_scope(sqlite_url: str, private_nats: NatsServer, tmp_path: Path) -> None:
    async with running_service(SPEC, database_url=sqlite_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)

        def call(method: str, request: Any, who: Identity) -> Any:
            return getattr(stub, method)(request, metadata=svc.md(who), timeout=5)

        mine = (await call("CreateCustomer", individual(), RM1)).customer  # 李明
        request = individual(OTHER_ID, "13900139000")
        request.name = "李_华%"
        odd = (await call("CreateCustomer", request, RM1)).customer
        theirs = (await call("CreateCustomer", individual("320311197707060018", "13700137000"), RM2)).customer

        async def ids(who: Identity, prefix: str) -> set[str]:
            reply = await call("ListCustomers", pb.ListCustomersRequest(name_prefix=prefix), who)
            return {c.id for c in reply.customers}

        assert await ids(RM1, "李") == {mine.id, odd.id}
        assert await ids(RM1, "李_") == {odd.id}  # wildcards in the prefix are plain characters
        assert await ids(RM1, "李明") == {mine.id} and await ids(RM1, "王") == set()
        assert await ids(RM2, "李") == {theirs.id} and await ids(HEAD, "李") == {mine.id, odd.id, theirs.id}
