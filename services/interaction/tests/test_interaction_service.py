"""The interaction service over real gRPC, fed by the real customer service's events over NATS."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import pytest

from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc
from crm.interaction.v1 import interaction_pb2, interaction_service_pb2, interaction_service_pb2_grpc
from crm_customer.server import SPEC as CUSTOMER
from crm_interaction.domain import log_contact
from crm_interaction.server import SPEC as INTERACTION
from crm_platform.auth_context import Scope
from crm_platform.errors import InvalidArgument
from crm_platform.grpc_client import parse_failure
from crm_platform.outbox import utcnow
from crm_testing.nats_server import NatsServer
from crm_testing.services import identity, running_service

RM1 = identity("rm1")
RM2 = identity("rm2")
HEAD = identity("head", roles=("branch_head",), scope=Scope.BRANCH, team_id="")


@pytest.mark.parametrize(
    ("channel", "summary", "fields"),
    [
        ("phone", "called about the 3-year CD", set()),
        (None, "x", {"channel"}),
        ("fax", "x", {"channel"}),
        ("visit", "   ", {"summary"}),
        ("visit", "x" * 2001, {"summary"}),
    ],
)
def test_contact_validation(channel: str | None, summary: str, fields: set[str]) -> None:
    if not fields:
        assert log_contact(RM1, "c1", channel, summary, None, utcnow()).summary == summary
        return
    with pytest.raises(InvalidArgument) as err:
        log_contact(RM1, "c1", channel, summary, None, utcnow())
    assert {v.field for v in err.value.violations} == fields


async def test_log_and_list_within_scope(
    db_url: str, sqlite_url: str, private_nats: NatsServer, tmp_path: Path
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
        created = await customer_service_pb2_grpc.CustomerServiceStub(cust.channel).CreateCustomer(
            customer_service_pb2.CreateCustomerRequest(kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL, name="李明"),
            metadata=cust.md(RM1),
            timeout=5,
        )
        customer_id = created.customer.id
        stub = interaction_service_pb2_grpc.InteractionServiceStub(svc.channel)
        contacted = (utcnow() - dt.timedelta(days=2)).replace(microsecond=0)  # a visit logged two days later
        request = interaction_service_pb2.LogInteractionRequest(
            customer_id=customer_id, channel=interaction_pb2.CHANNEL_PHONE, summary="asked about CDs", request_id="r1"
        )
        request.occurred_at.FromDatetime(contacted)
        # Known at once: before customer.created arrives, the interaction service asks the customer service.
        logged = await stub.LogInteraction(request, metadata=svc.md(RM1), timeout=5)
        again = await stub.LogInteraction(request, metadata=svc.md(RM1), timeout=5)
        assert again.interaction.id == logged.interaction.id  # idempotent for the same caller
        # The request id is bound to its request: another one under it is refused, not answered with the first.
        other = interaction_service_pb2.LogInteractionRequest()
        other.CopyFrom(request)
        other.summary = "asked about funds"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.LogInteraction(other, metadata=svc.md(RM1), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert parse_failure(err.value).reason == "IDEMPOTENCY_KEY_REUSED"
        # Two calls with one new request id and different requests at once: one contact logged, one refused.
        racing = []
        for summary in ("first", "second"):
            attempt = interaction_service_pb2.LogInteractionRequest()
            attempt.CopyFrom(request)
            attempt.request_id, attempt.summary = "r-race", summary
            racing.append(stub.LogInteraction(attempt, metadata=svc.md(RM1), timeout=5))
        results = await asyncio.gather(*racing, return_exceptions=True)
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(won) == 1 and len(lost) == 1, results
        assert parse_failure(lost[0]).reason == "IDEMPOTENCY_KEY_REUSED"

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.LogInteraction(request, metadata=svc.md(RM2), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND  # rm2's request id "r1" is not rm1's, and out of scope

        listing = await stub.ListInteractions(
            interaction_service_pb2.ListInteractionsRequest(customer_id=customer_id), metadata=svc.md(HEAD), timeout=5
        )
        assert [i.id for i in listing.interactions] == [won[0].interaction.id, logged.interaction.id]  # newest first
        # The customer service's last contact follows the event: the contact's own time, not when it was logged.
        customers = customer_service_pb2_grpc.CustomerServiceStub(cust.channel)
        for _ in range(200):
            got = await customers.GetCustomer(
                customer_service_pb2.GetCustomerRequest(customer_id=customer_id), metadata=cust.md(RM1), timeout=5
            )
            if got.customer.HasField("last_contact_at"):
                break
            await asyncio.sleep(0.05)
        assert got.customer.last_contact_at.ToDatetime(tzinfo=dt.UTC) == contacted

        no_read = identity(
            "head", roles=("branch_head",), scope=Scope.BRANCH, team_id="", permissions=("customer:read",)
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListInteractions(
                interaction_service_pb2.ListInteractionsRequest(customer_id=customer_id), metadata=svc.md(no_read)
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.LogInteraction(
                interaction_service_pb2.LogInteractionRequest(customer_id=customer_id, summary=""),
                metadata=svc.md(RM1),
                timeout=5,
            )
        assert {v.field for v in parse_failure(err.value).violations} == {"channel", "summary"}
