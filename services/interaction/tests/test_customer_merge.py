"""A merged duplicate customer's interactions move to the survivor: the real customer service publishes
``customer.merged`` through its outbox, the interaction service's directory consumer re-points the records
(real gRPC, real NATS, SQLite and PostgreSQL for the interaction service), and new records for the duplicate
are refused with the survivor's id."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc
from crm.interaction.v1 import interaction_pb2, interaction_service_pb2, interaction_service_pb2_grpc
from crm_customer.server import SPEC as CUSTOMER
from crm_interaction.server import SPEC as INTERACTION
from crm_platform.auth_context import Scope
from crm_platform.grpc_client import parse_failure
from crm_testing.nats_server import NatsServer
from crm_testing.services import eventually_found, identity, running_service

RM1 = identity("rm1")
HEAD = identity(
    "head",
    roles=("branch_head",),
    scope=Scope.BRANCH,
    team_id="",
    permissions=("customer:read", "customer:write", "customer:create", "customer:merge", "interaction:read"),
)


async def test_a_merged_duplicates_interactions_follow_the_survivor(
    db_url: str, private_nats: NatsServer, tmp_path: Path
) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "i").mkdir()
    async with (
        running_service(
            CUSTOMER,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'c' / 'customer.db'}",
            nats_url=private_nats.url,
            data_dir=tmp_path / "c",
        ) as cust,
        running_service(
            INTERACTION,
            database_url=db_url,
            nats_url=private_nats.url,
            data_dir=tmp_path / "i",
            extra_env={"CRM_CUSTOMER_ADDR": f"127.0.0.1:{cust.grpc_port}"},
        ) as svc,
    ):
        customers = customer_service_pb2_grpc.CustomerServiceStub(cust.channel)

        async def create(mobile: str) -> str:
            request = customer_service_pb2.CreateCustomerRequest(
                kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL,
                name="李明",
                profile=customer_pb2.CustomerProfile(mobile=mobile),
            )
            return (await customers.CreateCustomer(request, metadata=cust.md(RM1), timeout=5)).customer.id

        survivor, duplicate = await create("13800138000"), await create("")
        stub = interaction_service_pb2_grpc.InteractionServiceStub(svc.channel)

        def log(customer_id: str, request_id: str) -> interaction_service_pb2.LogInteractionRequest:
            return interaction_service_pb2.LogInteractionRequest(
                customer_id=customer_id, channel=interaction_pb2.CHANNEL_PHONE, summary="来电", request_id=request_id
            )

        on_duplicate = await eventually_found(lambda: stub.LogInteraction(log(duplicate, "d1"), metadata=svc.md(RM1)))
        on_survivor = await eventually_found(lambda: stub.LogInteraction(log(survivor, "s1"), metadata=svc.md(RM1)))

        merge = customer_service_pb2.MergeCustomersRequest(
            survivor_id=survivor, duplicate_id=duplicate, reason="同一客户重复建档"
        )
        await customers.MergeCustomers(merge, metadata=cust.md(HEAD), timeout=5)

        async def listed(customer_id: str) -> set[str]:
            request = interaction_service_pb2.ListInteractionsRequest(customer_id=customer_id)
            reply = await stub.ListInteractions(request, metadata=svc.md(HEAD), timeout=5)
            return {i.id for i in reply.interactions}

        expected = {on_duplicate.interaction.id, on_survivor.interaction.id}
        for _ in range(200):
            if await listed(survivor) == expected:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"the duplicate's interaction never moved: survivor has {await listed(survivor)}")
        assert await listed(duplicate) == set()
        # Nothing new lands on the retired file: the caller is told where the customer went.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.LogInteraction(log(duplicate, "d2"), metadata=svc.md(RM1), timeout=5)
        failure = parse_failure(refused.value)
        assert (failure.code, failure.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "MERGED")
        assert survivor in failure.message
