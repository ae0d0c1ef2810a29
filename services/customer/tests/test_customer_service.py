"""The customer service over real gRPC on loopback, with a real database (SQLite and PostgreSQL) and NATS."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import nats
import pytest

from crm.common.v1 import envelope_pb2
from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc, events_pb2
from crm_customer.server import SPEC
from crm_platform.auth_context import Scope
from crm_platform.grpc_client import parse_failure
from crm_testing.nats_server import NatsServer
from crm_testing.services import identity, running_service

RM1 = identity("rm1")
RM2 = identity("rm2")
HEAD = identity("head", roles=("branch_head",), scope=Scope.BRANCH, team_id="")
OTHER_HEAD = identity(
    "head2", roles=("branch_head",), scope=Scope.BRANCH, branch_id="SH001", team_id="T3", region="east"
)


async def test_create_get_scope_and_event(db_url: str, private_nats: NatsServer, tmp_path: Path) -> None:
    async with running_service(SPEC, database_url=db_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
        created = await stub.CreateCustomer(
            customer_service_pb2.CreateCustomerRequest(
                kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL, name=" 李明 ", request_id=f"r-{tmp_path.name}"
            ),
            metadata=svc.md(RM1),
            timeout=5,
        )
        customer = created.customer
        assert customer.name == "李明" and customer.owner_id == "rm1" and customer.branch_id == "BJ001"

        # Idempotent by request id: the same call returns the same customer.
        again = await stub.CreateCustomer(
            customer_service_pb2.CreateCustomerRequest(
                kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL, name=" 李明 ", request_id=f"r-{tmp_path.name}"
            ),
            metadata=svc.md(RM1),
            timeout=5,
        )
        assert again.customer.id == customer.id
        # The request id is bound to its request: another one under it (even one naming the same person after
        # trimming) is a client's mistake, refused rather than answered with the first customer.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateCustomer(
                customer_service_pb2.CreateCustomerRequest(
                    kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL, name="李明", request_id=f"r-{tmp_path.name}"
                ),
                metadata=svc.md(RM1),
                timeout=5,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert parse_failure(err.value).reason == "IDEMPOTENCY_KEY_REUSED"

        got = await stub.GetCustomer(
            customer_service_pb2.GetCustomerRequest(customer_id=customer.id), metadata=svc.md(HEAD), timeout=5
        )
        assert got.customer.id == customer.id

        for outsider in (RM2, OTHER_HEAD):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetCustomer(
                    customer_service_pb2.GetCustomerRequest(customer_id=customer.id),
                    metadata=svc.md(outsider),
                    timeout=5,
                )
            assert err.value.code() == grpc.StatusCode.NOT_FOUND

        # The event reached JetStream with the event id as Nats-Msg-Id.
        nc = await nats.connect(private_nats.url)
        try:
            js = nc.jetstream()
            sub = await js.pull_subscribe("crm.customer.customer.created", durable=None, stream="CRM_CUSTOMER")
            msgs = []
            while True:  # the session's NATS holds other tests' customer events too: read them all
                try:
                    msgs.extend(await sub.fetch(1000, timeout=1))
                except TimeoutError:  # nats-py raises its own or asyncio's under load
                    break
            envelopes = [envelope_pb2.EventEnvelope.FromString(m.data) for m in msgs]
            mine = [e for e in envelopes if e.subject_id == customer.id]
            assert len(mine) == 1
            payload = events_pb2.CustomerCreated()
            mine[0].payload.Unpack(payload)
            assert payload.owner_id == "rm1" and payload.branch_id == "BJ001"
            assert msgs[envelopes.index(mine[0])].headers["Nats-Msg-Id"] == mine[0].id
        finally:
            await nc.close()


async def test_one_key_with_two_requests_at_once_makes_one_customer(
    db_url: str, private_nats: NatsServer, tmp_path: Path
) -> None:
    async with running_service(SPEC, database_url=db_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
        calls = [
            stub.CreateCustomer(
                customer_service_pb2.CreateCustomerRequest(
                    kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL, name=name, request_id="r-race"
                ),
                metadata=svc.md(RM1),
                timeout=5,
            )
            for name in ("李明", "王芳", "李明", "王芳")
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        created = {r.customer.id for r in results if not isinstance(r, BaseException)}
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(created) == 1 and len(refused) == 2, results
        assert {parse_failure(r).reason for r in refused} == {"IDEMPOTENCY_KEY_REUSED"}
        listing = await stub.ListCustomers(customer_service_pb2.ListCustomersRequest(), metadata=svc.md(RM1), timeout=5)
        assert [c.id for c in listing.customers] == list(created)


async def test_invalid_input_names_each_field(sqlite_url: str, private_nats: NatsServer, tmp_path: Path) -> None:
    async with running_service(SPEC, database_url=sqlite_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateCustomer(
                customer_service_pb2.CreateCustomerRequest(name="   "), metadata=svc.md(RM1), timeout=5
            )
        failure = parse_failure(err.value)
        assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
        assert {v.field for v in failure.violations} == {"name", "kind"}


async def test_unsigned_or_forged_identity_is_refused(
    sqlite_url: str, private_nats: NatsServer, tmp_path: Path
) -> None:
    async with running_service(SPEC, database_url=sqlite_url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
        request = customer_service_pb2.GetCustomerRequest(customer_id="x")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetCustomer(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        forged = [(k, "admin" if k == "x-crm-user" else v) for k, v in svc.md(RM1)]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetCustomer(request, metadata=forged, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
