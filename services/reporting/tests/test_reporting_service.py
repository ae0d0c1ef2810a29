"""The reporting service over real gRPC on loopback, with a real SQLite database and a real NATS.

One service runs for the whole module (stopping a service with durable consumers takes a while); each test uses
its own branches and regions, so customers created by other tests sharing the NATS server never count. The same
queries run on PostgreSQL in ``test_reporting_store.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import nats
import pytest
import pytest_asyncio

from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc
from crm.customer.v1 import events_pb2 as customer_events
from crm.reporting.v1 import reporting_service_pb2, reporting_service_pb2_grpc
from crm_customer.server import SPEC as CUSTOMER_SPEC
from crm_platform.auth_context import Identity, Scope
from crm_platform.outbox import make_envelope
from crm_reporting.server import SPEC
from crm_testing.nats_server import NatsServer
from crm_testing.services import RunningService, identity, running_service

pytestmark = pytest.mark.asyncio(loop_scope="module")

CUSTOMER_CREATED = "crm.customer.customer.created"
ADMIN = identity("ops", roles=("admin",), scope=Scope.ALL)


@dataclass
class Reporting:
    """The module's running service and its stub."""

    svc: RunningService
    stub: reporting_service_pb2_grpc.ReportingServiceStub
    nats_url: str

    async def counts(self, who: Identity) -> dict[str, int]:
        """The customer counts ``who`` may read, by branch."""
        reply = await self.stub.GetCustomerCounts(
            reporting_service_pb2.GetCustomerCountsRequest(), metadata=self.svc.md(who), timeout=5
        )
        branches = [c.branch_id for c in reply.counts]
        assert branches == sorted(branches)
        return {c.branch_id: c.customers for c in reply.counts}

    async def wait_for_count(self, branch_id: str, customers: int, timeout: float = 10.0) -> int:
        """The branch's count once it reaches ``customers`` (bounded wait: events arrive asynchronously)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            count = (await self.counts(ADMIN)).get(branch_id, 0)
            if count >= customers or asyncio.get_running_loop().time() > deadline:
                return count
            await asyncio.sleep(0.05)

    async def publish(self, subject: str, payload: object, subject_id: str) -> None:
        """Publish one customer event as the customer service's relay would."""
        envelope = make_envelope(subject, "customer", payload, subject_id=subject_id, actor="head")  # type: ignore[arg-type]
        nc = await nats.connect(self.nats_url)
        try:
            await nc.jetstream().publish(subject, envelope.SerializeToString(), headers={"Nats-Msg-Id": envelope.id})
        finally:
            await nc.close()

    async def publish_customer_created(self, branch_id: str, region: str, *, copies: int = 1) -> None:
        """Publish one ``customer.created`` event (``copies`` times, as redeliveries)."""
        customer_id = str(uuid.uuid4())
        payload = customer_events.CustomerCreated(
            customer_id=customer_id, owner_id="rm1", team_id="T1", branch_id=branch_id, region=region
        )
        envelope = make_envelope(CUSTOMER_CREATED, "customer", payload, subject_id=customer_id, actor="rm1")
        nc = await nats.connect(self.nats_url)
        try:
            js = nc.jetstream()
            for copy in range(copies):
                # A distinct Nats-Msg-Id gets past JetStream's de-duplication: only the inbox stands in the way.
                ack = await js.publish(
                    CUSTOMER_CREATED, envelope.SerializeToString(), headers={"Nats-Msg-Id": f"{envelope.id}/{copy}"}
                )
                assert not ack.duplicate, "JetStream must store every copy for the test to mean anything"
        finally:
            await nc.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reporting(private_nats: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Reporting]:
    data_dir = tmp_path_factory.mktemp("reporting")
    url = f"sqlite+aiosqlite:///{data_dir / 'reporting.db'}"
    async with running_service(SPEC, database_url=url, nats_url=private_nats.url, data_dir=data_dir) as svc:
        yield Reporting(svc, reporting_service_pb2_grpc.ReportingServiceStub(svc.channel), private_nats.url)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def test_customers_count_for_their_branch_within_scope(
    reporting: Reporting, private_nats: NatsServer, tmp_path: Path
) -> None:
    region, other_region = unique("R"), unique("R")
    branch, sibling, far = unique("B"), unique("B"), unique("B")
    rm = identity("rm1", branch_id=branch, region=region)
    sibling_rm = identity("rm2", branch_id=sibling, region=region)
    far_rm = identity("rm3", branch_id=far, region=other_region)
    customer_db = f"sqlite+aiosqlite:///{tmp_path / 'customer.db'}"
    async with running_service(
        CUSTOMER_SPEC, database_url=customer_db, nats_url=private_nats.url, data_dir=tmp_path
    ) as crm:
        customers = customer_service_pb2_grpc.CustomerServiceStub(crm.channel)
        for who in (rm, rm, sibling_rm, far_rm):
            await customers.CreateCustomer(
                customer_service_pb2.CreateCustomerRequest(kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL, name="李明"),
                metadata=crm.md(who),
                timeout=5,
            )

    # The customer service publishes in commit order, so once the last one is counted all are.
    assert await reporting.wait_for_count(far, 1) == 1
    everything = await reporting.counts(ADMIN)
    assert {b: everything[b] for b in (branch, sibling, far)} == {branch: 2, sibling: 1, far: 1}

    executive = identity("exec", roles=("executive",), scope=Scope.REGION, branch_id="", region=region)
    assert await reporting.counts(executive) == {branch: 2, sibling: 1}
    head = identity("head", roles=("branch_head",), scope=Scope.BRANCH, branch_id=branch, region=region)
    assert await reporting.counts(head) == {branch: 2}


async def test_a_redelivered_event_counts_once(reporting: Reporting) -> None:
    region, branch, witness = unique("R"), unique("B"), unique("B")
    await reporting.publish_customer_created(branch, region, copies=2)
    # The consumer handles events in stream order: once the witness is counted, both copies were handled.
    await reporting.publish_customer_created(witness, region)
    assert await reporting.wait_for_count(witness, 1) == 1
    assert (await reporting.counts(ADMIN))[branch] == 1


async def test_merged_and_removed_customers_leave_the_count_and_erased_ones_stay(reporting: Reporting) -> None:
    region, branch, witness = unique("R"), unique("B"), unique("B")
    for _ in range(4):
        await reporting.publish_customer_created(branch, region)
    assert await reporting.wait_for_count(branch, 4) == 4
    merged = customer_events.CustomerMerged(
        survivor_id="s1", duplicate_id="d1", branch_id=branch, duplicate_branch_id=branch
    )
    await reporting.publish("crm.customer.customer.merged", merged, "s1")
    await reporting.publish(  # a rolled-back import's customer: the record is gone
        "crm.customer.customer.erased",
        customer_events.CustomerErased(customer_id="r1", removed=True, branch_id=branch),
        "r1",
    )
    await reporting.publish(  # a lawful erasure: the non-personal facts stay, and so does the count
        "crm.customer.customer.erased", customer_events.CustomerErased(customer_id="e1", branch_id=branch), "e1"
    )
    # The consumer handles events in stream order: once the witness is counted, all of the above were handled.
    await reporting.publish_customer_created(witness, region)
    assert await reporting.wait_for_count(witness, 1) == 1
    assert (await reporting.counts(ADMIN))[branch] == 2


@pytest.mark.parametrize("scope", [Scope.TEAM, Scope.OWN])
async def test_scopes_narrower_than_a_branch_are_refused(reporting: Reporting, scope: Scope) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reporting.counts(identity("lead1", scope=scope))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details() == "branch counts need branch scope or wider"


async def test_reading_reports_needs_the_permission(reporting: Reporting) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await reporting.counts(identity("ops", scope=Scope.ALL, permissions=("customer:read",)))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
