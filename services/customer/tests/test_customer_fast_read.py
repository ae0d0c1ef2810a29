"""GetCustomer's asyncpg read path answers exactly what the SQLAlchemy store answers, in and out of scope, on a
real PostgreSQL; on SQLite the service keeps the SQLAlchemy path."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import insert

from crm.customer.v1 import customer_service_pb2 as pb
from crm_customer.config import DEV_MASTER_KEYS
from crm_customer.domain import register_customer
from crm_customer.server import SPEC
from crm_customer.store import CustomerStore
from crm_customer.store.fastread import CustomerReads
from crm_customer.store.tables import customer_tags
from crm_platform.auth_context import Scope
from crm_platform.db import create_engine, normalise_url, session_factory
from crm_platform.errors import NotFound
from crm_platform.fastread import ReadPool, asyncpg_dsn
from crm_platform.identifiers import resident_id_check_char
from crm_platform.migrations import migrate
from crm_platform.outbox import Outbox, utcnow
from crm_platform.pii import Keyring
from crm_testing.nats_server import NatsServer
from crm_testing.services import identity, running_service

_RM1 = identity("rm1")
_OTHERS = [
    identity("rm2"),  # same team, own scope: not rm1's customer
    identity("lead1", roles=("team_lead",), scope=Scope.TEAM),
    identity("lead3", roles=("team_lead",), scope=Scope.TEAM, team_id="T3", branch_id="SH001", region="east"),
    identity("head", roles=("branch_head",), scope=Scope.BRANCH),
    identity("head2", roles=("branch_head",), scope=Scope.BRANCH, team_id="", branch_id="SH001", region="east"),
    identity("exec", roles=("executive",), scope=Scope.REGION, team_id="", branch_id=""),
    identity("exec2", roles=("executive",), scope=Scope.REGION, team_id="", branch_id="", region="east"),
    identity("auditor", roles=("auditor",), scope=Scope.NONE, team_id="", branch_id="", region=""),
    identity("all", roles=("system",), scope=Scope.ALL),
    identity("", scope=Scope.OWN),  # no user id: sees nothing
]


def _resident_id(sequence: int) -> str:
    body = f"11010519900101{sequence:03d}"
    return body + resident_id_check_char(body)


@pytest.mark.postgres
async def test_fast_read_answers_what_the_store_answers(postgres_url: str) -> None:
    engine = create_engine(normalise_url(postgres_url))
    await migrate(engine, "crm_customer")
    store = CustomerStore(session_factory(engine), Outbox("customer"), Keyring.from_spec(DEV_MASTER_KEYS, "dev"))
    dsn = asyncpg_dsn(engine.url)
    assert dsn is not None
    pool = ReadPool(dsn, size=2)
    await pool.open()
    reads = CustomerReads(store, pool)
    try:
        profile = {
            "name": "李明",
            "id_type": "resident_id",
            "id_number": _resident_id(123),
            "mobile": "13800138000",
            "gender": "male",
            "birth_date": "1990-01-01",
            "email": "li.ming@example.com",
            "address": "北京市朝阳区建国路 1 号",
        }
        full = await store.create(_RM1, register_customer(_RM1, "individual", profile, utcnow()), "")
        bare = await store.create(_RM1, register_customer(_RM1, "individual", {"name": "王芳"}, utcnow()), "")
        async with store._sessions() as session, session.begin():
            await session.execute(
                insert(customer_tags),
                [
                    {"customer_id": full.id, "tag": tag, "created_by": "rm1", "created_at": utcnow()}
                    for tag in ("vip", "high_net_worth", "elderly")
                ],
            )
        erased = await store.create(
            _RM1,
            register_customer(_RM1, "individual", {**profile, "id_number": _resident_id(124), "mobile": ""}, utcnow()),
            "",
        )
        await store.erase(_RM1, await store.get(_RM1, erased.id), "request of the customer", utcnow())

        for customer_id in (full.id, bare.id, erased.id):
            fast = await reads.get(_RM1, customer_id)
            assert fast == await store.get(_RM1, customer_id)
        assert (await reads.get(_RM1, full.id)).tags == ("elderly", "high_net_worth", "vip")
        assert (await reads.get(_RM1, full.id)).profile.mobile == "13800138000"  # decrypted, as the store does
        assert (await reads.get(_RM1, erased.id)).erased_at is not None

        for who in _OTHERS:
            try:
                expected = await store.get(who, full.id)
            except NotFound:
                with pytest.raises(NotFound):
                    await reads.get(who, full.id)
            else:
                assert await reads.get(who, full.id) == expected, who
        with pytest.raises(NotFound):
            await reads.get(_RM1, "no-such-customer")
    finally:
        await pool.close()
        await engine.dispose()


async def test_get_customer_on_sqlite_keeps_the_store_path(
    sqlite_url: str, private_nats: NatsServer, tmp_path: Path
) -> None:
    from crm.customer.v1 import customer_pb2, customer_service_pb2_grpc

    async with running_service(SPEC, database_url=sqlite_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
        created = await stub.CreateCustomer(
            pb.CreateCustomerRequest(
                kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL,
                name="李明",
                profile=customer_pb2.CustomerProfile(mobile="13800138000", birth_date=dt.date(1990, 1, 1).isoformat()),
            ),
            metadata=svc.md(_RM1),
            timeout=5,
        )
        got = await stub.GetCustomer(
            pb.GetCustomerRequest(customer_id=created.customer.id), metadata=svc.md(_RM1), timeout=5
        )
        assert got.customer.profile.mobile == "138****8000"
