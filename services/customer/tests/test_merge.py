"""Customer merge over real gRPC with a real database (SQLite and PostgreSQL) and NATS: a duplicate file merged
into a survivor fills its empty fields (re-encrypted under the survivor's key), unions tags, moves holdings,
leaves lists, searches and duplicate detection, keeps history on both and publishes one ``customer.merged``;
refusals for scope, permission, different ID numbers, kinds, versions and contradicting files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from test_customer_files import BROAD, HEAD2, ID_NUMBER, MOBILE, OTHER_ID, RM1, RM2, RM3, failure, individual, published

from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc, events_pb2
from crm_customer import domain
from crm_customer.server import SPEC
from crm_platform.auth_context import Identity, Scope
from crm_platform.errors import Conflict, FailedPrecondition, InvalidArgument, PermissionDenied
from crm_testing.nats_server import NatsServer
from crm_testing.services import identity, running_service

pb = customer_service_pb2
MERGERS = (*BROAD, "customer:merge", "customer:erase", "tag:read")
HEAD = identity("head", roles=("branch_head",), scope=Scope.BRANCH, team_id="", permissions=MERGERS)
LEAD1 = identity("lead1", roles=("team_lead",), scope=Scope.TEAM, permissions=MERGERS)
PASSPORT = "E12345678"
CREDIT_CODE = "91350100M000100Y43"


def _holding(code: str, kind: int, amount: str) -> customer_pb2.Holding:
    h = customer_pb2.Holding(product_code=code, product_type=kind)
    h.amount.amount = amount
    return h


def person(mobile: str, **profile: Any) -> pb.CreateCustomerRequest:
    """An individual without an ID document (the file a lobby or a quick entry leaves)."""
    return pb.CreateCustomerRequest(
        kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL,
        name="李明",
        profile=customer_pb2.CustomerProfile(mobile=mobile, **profile),
    )


def _merge(survivor: str, duplicate: str, reason: str = "同一客户重复建档", **versions: int) -> Any:
    return pb.MergeCustomersRequest(survivor_id=survivor, duplicate_id=duplicate, reason=reason, **versions)


async def test_merge_fills_unions_moves_and_retires_the_duplicate(
    db_url: str, private_nats: NatsServer, tmp_path: Path
) -> None:
    async with running_service(SPEC, database_url=db_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)

        def call(method: str, request: Any, who: Identity) -> Any:
            return getattr(stub, method)(request, metadata=svc.md(who), timeout=10)

        # The RM's file, opened with a passport; the teller-style file of the same person with a resident ID.
        kept = pb.CreateCustomerRequest(
            kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL,
            name="李明",
            profile=customer_pb2.CustomerProfile(
                id_type=customer_pb2.ID_TYPE_PASSPORT, id_number=PASSPORT, occupation="engineer", email="li@example.com"
            ),
        )
        survivor = (await call("CreateCustomer", kept, RM1)).customer
        dup = individual(
            address="北京市朝阳区建国路88号", occupation="teacher", employer="某某银行", do_not_disturb=True
        )
        duplicate = (await call("CreateCustomer", dup, RM2)).customer
        await call("TagCustomer", pb.TagCustomerRequest(customer_id=survivor.id, add=["高净值"]), RM1)
        await call("TagCustomer", pb.TagCustomerRequest(customer_id=duplicate.id, add=["潜力客户", "高净值"]), RM2)
        deposit, wealth, fund = customer_pb2.PRODUCT_TYPE_DEPOSIT, customer_pb2.PRODUCT_TYPE_WEALTH, 4
        mine = [_holding("D1", deposit, "100000"), _holding("W1", wealth, "200000")]
        theirs = [_holding("W1", wealth, "999"), _holding("F1", fund, "300000")]
        await call("ReplaceHoldings", pb.ReplaceHoldingsRequest(customer_id=survivor.id, holdings=mine), RM1)
        await call("ReplaceHoldings", pb.ReplaceHoldingsRequest(customer_id=duplicate.id, holdings=theirs), RM2)
        before = (await call("GetCustomer", pb.GetCustomerRequest(customer_id=survivor.id), HEAD)).customer
        dup_before = (await call("GetCustomer", pb.GetCustomerRequest(customer_id=duplicate.id), HEAD)).customer

        reply = await call(
            "MergeCustomers",
            _merge(survivor.id, duplicate.id, expected_survivor_version=before.version),
            HEAD,
        )
        merged = reply.survivor
        p = merged.profile
        # The survivor keeps its own values and owner; its empty fields come from the duplicate (masked here).
        assert (p.id_type, p.id_number, p.occupation) == (customer_pb2.ID_TYPE_PASSPORT, "E1*****78", "engineer")
        assert (p.mobile, p.address, p.employer) == ("138****8000", "北京市朝阳区****", "某某银行")
        assert (p.birth_date, p.gender, p.do_not_disturb) == ("1990-01-01", customer_pb2.GENDER_MALE, True)
        assert merged.owner_id == "rm1" and merged.version == before.version + 1
        assert list(merged.tags) == sorted(["高净值", "潜力客户"])
        assert list(reply.filled_fields) == [
            "gender",
            "birth_date",
            "mobile",
            "address",
            "employer",
            "do_not_disturb",
            "tags",
        ]
        assert merged.aum.amount == "600000.00" and merged.product_count == 3
        assert not merged.merged_into

        # Re-encrypted under the survivor's own key: it decrypts, and reveals as the duplicate's plaintext.
        reveal = pb.RevealCustomerRequest(customer_id=survivor.id, fields=["mobile", "address"], purpose="核对合并结果")
        values = (await call("RevealCustomer", reveal, HEAD)).values
        assert dict(values) == {"mobile": MOBILE, "address": "北京市朝阳区建国路88号"}

        holdings = (await call("ListHoldings", pb.ListHoldingsRequest(customer_id=survivor.id), HEAD)).holdings
        assert [(h.product_code, h.amount.amount) for h in holdings] == [
            ("D1", "100000.00"),
            ("F1", "300000.00"),
            ("W1", "200000.00"),
        ]
        left = (await call("ListHoldings", pb.ListHoldingsRequest(customer_id=duplicate.id), HEAD)).holdings
        assert [h.product_code for h in left] == ["W1"]  # a product both held stays: no double counting

        # The duplicate stays readable by id (links resolve), marked with its survivor; it takes no more changes.
        gone = (await call("GetCustomer", pb.GetCustomerRequest(customer_id=duplicate.id), RM2)).customer
        assert gone.merged_into == survivor.id and gone.HasField("merged_at")
        assert gone.version == dup_before.version + 1 and gone.owner_id == "rm2" and gone.name == "李明"
        assert (
            gone.aum.amount == "999.00"
            and gone.product_count == 1
            and list(gone.tags) == sorted(["高净值", "潜力客户"])
        )
        patch = pb.UpdateCustomerRequest(
            customer_id=duplicate.id,
            expected_version=gone.version,
            profile=customer_pb2.CustomerProfile(mobile="13700137000"),
            update_mask=field_mask_pb2.FieldMask(paths=["mobile"]),
        )
        refused = await failure(call("UpdateCustomer", patch, RM2))
        assert refused.code == grpc.StatusCode.FAILED_PRECONDITION and refused.reason == "MERGED"
        # Nor ownership, tags or holdings: they go to the survivor (single calls refused, batch items "merged").
        assign = pb.AssignCustomerRequest(
            customer_id=duplicate.id,
            owner_id="rm1",
            owner_team_id="T1",
            owner_branch_id="BJ001",
            owner_roles=["rm"],
            reason="二次分配",
        )
        for method, request in (
            ("AssignCustomer", assign),
            ("ReclaimCustomer", pb.ReclaimCustomerRequest(customer_id=duplicate.id, reason="收回")),
            ("TagCustomer", pb.TagCustomerRequest(customer_id=duplicate.id, add=["老客户"])),
            ("ReplaceHoldings", pb.ReplaceHoldingsRequest(customer_id=duplicate.id)),
        ):
            refused = await failure(call(method, request, HEAD))
            assert (refused.code, refused.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "MERGED"), method
        bulk = pb.AssignCustomersRequest(
            customer_ids=[duplicate.id],
            owner_id="rm1",
            owner_team_id="T1",
            owner_branch_id="BJ001",
            owner_roles=["rm"],
            reason="二次分配",
        )
        assert [r.outcome for r in (await call("AssignCustomers", bulk, HEAD)).results] == ["merged"]
        batch = pb.ReplaceHoldingsBatchRequest(snapshots=[pb.HoldingsSnapshot(customer_id=duplicate.id)])
        assert [r.outcome for r in (await call("ReplaceHoldingsBatch", batch, HEAD)).results] == ["merged"]
        again = await failure(call("MergeCustomers", _merge(survivor.id, duplicate.id), HEAD))
        assert again.code == grpc.StatusCode.FAILED_PRECONDITION and again.reason == "ALREADY_MERGED"

        # Lists and exact searches answer the survivor only.
        async def ids(who: Identity, **kw: Any) -> list[str]:
            return [c.id for c in (await call("ListCustomers", pb.ListCustomersRequest(**kw), who)).customers]

        assert await ids(HEAD) == [survivor.id]
        assert await ids(HEAD, name="李明") == [survivor.id]
        assert await ids(HEAD, mobile=MOBILE) == [survivor.id]
        assert await ids(RM2) == []  # RM2's merged file left their list
        assert await ids(HEAD, id_number=ID_NUMBER) == []  # the survivor kept its passport; see the README
        assert await ids(HEAD, customer_no=duplicate.customer_no) == []

        # Duplicate detection names the survivor for the mobile it took; the merged file is out of it.
        clash = await failure(call("CreateCustomer", individual(OTHER_ID, MOBILE), RM1))
        assert clash.code == grpc.StatusCode.ALREADY_EXISTS and clash.reason == "DUPLICATE_MOBILE"
        assert clash.metadata["existing_id"] == survivor.id

        # History on both: who, the reason, which fields (sensitive values masked).
        def history(customer_id: str) -> Any:
            return call("ListCustomerHistory", pb.ListCustomerHistoryRequest(customer_id=customer_id), HEAD)

        entry = next(c for c in (await history(survivor.id)).changes if c.action != "revealed")
        assert (entry.action, entry.actor, entry.note) == ("merged", "head", "同一客户重复建档")
        changes = {c.field: (c.before, c.after) for c in entry.changes}
        assert changes["merged_from"] == ("", duplicate.id)
        assert changes["mobile"] == ("", "138****8000") and changes["address"] == ("", "北京市朝阳区****")
        assert changes["tags"] == ("高净值", "潜力客户, 高净值") and changes["holdings"] == ("", "F1")
        entry = (await history(duplicate.id)).changes[0]
        assert (entry.action, entry.actor, entry.note) == ("merged", "head", "同一客户重复建档")
        assert [(c.field, c.before, c.after) for c in entry.changes] == [
            ("merged_into", "", survivor.id),
            ("holdings", "F1", ""),
        ]
        assert MOBILE not in str(await history(survivor.id)) + str(await history(duplicate.id))

        # One event, through the outbox, naming fields and never their values.
        found, _ = await published(private_nats.url, "crm.customer.customer.merged", survivor.id, 1)
        assert len(found) == 1
        assert found[0].actor == "head"
        payload = events_pb2.CustomerMerged()
        found[0].payload.Unpack(payload)
        assert (payload.survivor_id, payload.duplicate_id, payload.actor) == (survivor.id, duplicate.id, "head")
        assert list(payload.filled_fields) == list(reply.filled_fields)
        assert list(payload.moved_product_codes) == ["F1"] and payload.branch_id == "BJ001"
        assert (payload.survivor_owner_id, payload.duplicate_owner_id) == (survivor.owner_id, duplicate.owner_id)
        assert survivor.owner_id and duplicate.owner_id and survivor.owner_id != duplicate.owner_id
        for secret in (MOBILE, "建国路", ID_NUMBER):
            assert secret.encode() not in found[0].SerializeToString()


async def test_erasing_a_survivor_erases_every_file_merged_into_it(
    db_url: str, private_nats: NatsServer, tmp_path: Path
) -> None:
    """A merged file keeps the person's data under its own data key: erasing the person must shred it too,
    through a chain of merges, with a history entry and an event for each."""
    async with running_service(SPEC, database_url=db_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)

        def call(method: str, request: Any, who: Identity) -> Any:
            return getattr(stub, method)(request, metadata=svc.md(who), timeout=10)

        first = (await call("CreateCustomer", individual(address="北京市朝阳区建国路88号"), RM2)).customer
        middle = (await call("CreateCustomer", person("13600136000", email="li@example.com"), RM1)).customer
        last = (await call("CreateCustomer", person("13500135000"), RM1)).customer
        # first → middle, then middle → last: last is the person's file now.
        await call("MergeCustomers", _merge(middle.id, first.id), HEAD)
        await call("MergeCustomers", _merge(last.id, middle.id), HEAD)
        unrelated = (await call("CreateCustomer", person("13300133000"), RM1)).customer
        # A merged file alone cannot be erased: the person's data lives on in the file it went into.
        alone = await failure(call("EraseCustomer", pb.EraseCustomerRequest(customer_id=first.id, reason="PIPL"), HEAD))
        assert (alone.code, alone.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "MERGED")
        assert middle.id in alone.message

        erased = await call("EraseCustomer", pb.EraseCustomerRequest(customer_id=last.id, reason="PIPL art. 47"), HEAD)
        assert erased.customer.erased
        for merged in (first, middle):
            got = (await call("GetCustomer", pb.GetCustomerRequest(customer_id=merged.id), HEAD)).customer
            assert got.erased and got.name == "[erased]", merged.id
            assert got.profile.id_number == got.profile.mobile == got.profile.address == got.profile.email == ""
            reveal = pb.RevealCustomerRequest(
                customer_id=merged.id, fields=["mobile", "address", "email"], purpose="核对"
            )
            assert dict((await call("RevealCustomer", reveal, HEAD)).values) == {}  # nothing left to reveal
            history = (
                await call("ListCustomerHistory", pb.ListCustomerHistoryRequest(customer_id=merged.id), HEAD)
            ).changes
            entry = next(h for h in history if h.action != "revealed")
            assert (entry.action, entry.actor) == ("erased", "head")
            assert last.id in entry.note and "PIPL art. 47" in entry.note
            assert all(c.before == c.after == "" for h in history for c in h.changes)
            found, _ = await published(private_nats.url, "crm.customer.customer.erased", merged.id, 1)
            assert len(found) == 1
        # A file that was never merged into it keeps its data.
        kept = (await call("GetCustomer", pb.GetCustomerRequest(customer_id=unrelated.id), RM1)).customer
        assert not kept.erased and kept.profile.mobile == "133****3000"


async def test_merge_refusals(db_url: str, private_nats: NatsServer, tmp_path: Path) -> None:
    async with running_service(SPEC, database_url=db_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)

        def call(method: str, request: Any, who: Identity) -> Any:
            return getattr(stub, method)(request, metadata=svc.md(who), timeout=10)

        async def refused(request: Any, who: Identity = HEAD) -> Any:
            return await failure(call("MergeCustomers", request, who))

        mine = (await call("CreateCustomer", individual(), RM1)).customer
        bare = (await call("CreateCustomer", person("13900139000"), RM1)).customer
        other_team = (await call("CreateCustomer", person("13700137000"), RM3)).customer
        far = (await call("CreateCustomer", person("13600136000"), HEAD2)).customer

        # Out of scope answers as an unknown id does: NOT_FOUND, nothing told.
        for who, a, b in ((HEAD, mine.id, far.id), (HEAD, far.id, mine.id), (LEAD1, mine.id, other_team.id)):
            problem = await refused(_merge(a, b), who)
            assert problem.code == grpc.StatusCode.NOT_FOUND, (who.user_id, problem)
        unknown = await refused(_merge(mine.id, "no-such-customer"))
        assert unknown.code == grpc.StatusCode.NOT_FOUND
        # An RM holds no customer:merge.
        assert (await refused(_merge(mine.id, bare.id), RM1)).code == grpc.StatusCode.PERMISSION_DENIED

        # The request's own fields, each named.
        for request, field in (
            (_merge(mine.id, mine.id), "duplicate_id"),
            (_merge(mine.id, ""), "duplicate_id"),
            (_merge("", bare.id), "survivor_id"),
            (_merge(mine.id, bare.id, reason="  "), "reason"),
            (_merge(mine.id, bare.id, reason="x" * 501), "reason"),
        ):
            problem = await refused(request)
            assert problem.code == grpc.StatusCode.INVALID_ARGUMENT and [v.field for v in problem.violations] == [field]

        # Not the same person: two resident IDs that differ.
        other = (await call("CreateCustomer", individual(OTHER_ID, "13500135000"), RM2)).customer
        problem = await refused(_merge(mine.id, other.id))
        assert problem.code == grpc.StatusCode.FAILED_PRECONDITION and problem.reason == "DIFFERENT_ID_NUMBER"
        assert "not the same person" in problem.message

        # Kinds differ.
        company = pb.CreateCustomerRequest(
            kind=customer_pb2.CUSTOMER_KIND_CORPORATE,
            name="北京某某科技有限公司",
            profile=customer_pb2.CustomerProfile(credit_code=CREDIT_CODE),
        )
        corporate = (await call("CreateCustomer", company, RM1)).customer
        assert (await refused(_merge(corporate.id, bare.id))).reason == "KIND_MISMATCH"

        # A stale version.
        stale = await refused(_merge(mine.id, bare.id, expected_duplicate_version=bare.version + 5))
        assert stale.code == grpc.StatusCode.ABORTED

        # The files contradict each other: the survivor's birth date is not the one the resident ID encodes.
        older = (await call("CreateCustomer", person("13400134000", birth_date="1985-05-05"), RM1)).customer
        problem = await refused(_merge(older.id, mine.id))
        assert problem.code == grpc.StatusCode.FAILED_PRECONDITION and problem.reason == "MERGE_CONFLICT"
        assert "id_number" in problem.message

        # An erased file takes no part.
        await call("EraseCustomer", pb.EraseCustomerRequest(customer_id=other.id, reason="客户申请删除"), HEAD)
        assert (await refused(_merge(bare.id, other.id))).reason == "ERASED"

        # Nothing above changed either file.
        for customer in (mine, bare, older):
            now = (await call("GetCustomer", pb.GetCustomerRequest(customer_id=customer.id), HEAD)).customer
            assert now.version == customer.version and not now.merged_into

        # A team lead merges inside the team; the survivor's owner stays.
        done = (await call("MergeCustomers", _merge(bare.id, mine.id), LEAD1)).survivor
        assert done.owner_id == "rm1" and done.profile.id_number == "110105********1232"
        assert done.profile.birth_date == "1990-01-01"  # came with the resident ID
        # The ID number moved to the survivor: a new file with it now clashes with the survivor.
        clash = await failure(call("CreateCustomer", individual(ID_NUMBER, "13300133000"), RM2))
        assert clash.reason == "DUPLICATE_ID_NUMBER"
        searched = await call("ListCustomers", pb.ListCustomersRequest(id_number=ID_NUMBER), HEAD)
        assert [c.id for c in searched.customers] == [bare.id]


# The rules alone, without a database.

_NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _customer(customer_id: str, kind: str = "individual", version: int = 1, **profile: Any) -> domain.Customer:
    return domain.Customer(
        id=customer_id,
        customer_no=f"C{customer_id}",
        kind=domain.CustomerKind(kind),
        profile=domain.Profile(name=profile.pop("name", "李明"), **profile),
        owner_id="rm1",
        team_id="T1",
        branch_id="BJ001",
        region="north",
        version=version,
        created_by="rm1",
        created_at=_NOW,
        updated_at=_NOW,
    )


def test_rules_of_a_merge() -> None:
    with pytest.raises(PermissionDenied):
        domain.plan_merge(RM1, _customer("a"), _customer("b"), 0, 0, _NOW)
    # Different ID types are the typical duplicate; the same type with another number is another person.
    plan = domain.plan_merge(
        HEAD,
        _customer("a", id_type="passport", id_number=PASSPORT),
        _customer("b", id_type="resident_id", id_number=ID_NUMBER, birth_date=dt.date(1990, 1, 1)),
        0,
        0,
        _NOW,
    )
    assert plan.survivor.profile.id_number == PASSPORT and plan.survivor.profile.birth_date == dt.date(1990, 1, 1)
    assert plan.filled_fields == ["birth_date"] and plan.duplicate.merged_into == "a"
    with pytest.raises(FailedPrecondition, match="not the same person"):
        domain.plan_merge(
            HEAD,
            _customer("a", id_type="passport", id_number=PASSPORT),
            _customer("b", id_type="passport", id_number="E87654321"),
            0,
            0,
            _NOW,
        )
    with pytest.raises(FailedPrecondition, match="not the same company"):
        domain.plan_merge(
            HEAD,
            _customer("a", "corporate", credit_code=CREDIT_CODE),
            _customer("b", "corporate", credit_code="91110000600037341L"),
            0,
            0,
            _NOW,
        )
    with pytest.raises(Conflict):
        domain.plan_merge(HEAD, _customer("a", version=3), _customer("b"), 2, 0, _NOW)
    # Fields that mean something together move together, or not at all.
    plan = domain.plan_merge(
        HEAD,
        _customer("a", annual_income="", risk_appetite="balanced", risk_assessed_on=dt.date(2026, 1, 1)),
        _customer(
            "b",
            annual_income="300000.00",
            annual_income_currency="HKD",
            risk_appetite="aggressive",
            risk_assessed_on=dt.date(2025, 6, 1),
            tier="gold",
        ),
        0,
        0,
        _NOW,
    )
    p = plan.survivor.profile
    assert (p.annual_income, p.annual_income_currency) == ("300000.00", "HKD")
    assert (p.risk_appetite, p.risk_assessed_on, p.tier) == ("balanced", dt.date(2026, 1, 1), "none")
    with pytest.raises(InvalidArgument) as err:
        domain.check_merge_request("a", "a", "")
    assert [v.field for v in err.value.violations] == ["duplicate_id", "reason"]
