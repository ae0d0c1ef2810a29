"""The opportunity service over real gRPC on loopback, with a real SQLite database and a real NATS.

One service runs for the whole module: stopping a service with durable consumers takes seconds (see the
platform's bus drain), and the tests share nothing but the service, each using its own customers. The customer
directory is fed by the real customer service (its ``customer.created`` event crossing JetStream) or, where a
test needs customers in many places, by the directory's upsert on the service's database. The same queries run
on PostgreSQL in ``test_opportunity_store.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm.common.v1 import money_pb2, paging_pb2
from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc
from crm.opportunity.v1 import events_pb2, opportunity_pb2, opportunity_service_pb2, opportunity_service_pb2_grpc
from crm_customer.server import SPEC as CUSTOMER_SPEC
from crm_opportunity.server import SPEC
from crm_opportunity.store import opportunities as opportunities_table
from crm_platform.auth_context import Scope
from crm_platform.db import create_engine, normalise_url, session_factory
from crm_platform.directory import upsert
from crm_platform.grpc_client import parse_failure
from crm_testing.nats_server import NatsServer
from crm_testing.services import RunningService, eventually_found, identity, running_service
from crm_testing.streams import messages_about

pytestmark = pytest.mark.asyncio(loop_scope="module")


RM1 = identity("rm1")
RM2 = identity("rm2")
HEAD = identity("head", roles=("branch_head",), scope=Scope.BRANCH, team_id="")
OTHER_HEAD = identity(
    "head2", roles=("branch_head",), scope=Scope.BRANCH, branch_id="SH001", team_id="T3", region="east"
)
LEAD_T1 = identity("lead1", roles=("team_lead",), scope=Scope.TEAM)
LEAD_T2 = identity("lead2", roles=("team_lead",), scope=Scope.TEAM, team_id="T2")
EXEC_NORTH = identity("exec1", roles=("executive",), scope=Scope.REGION)
EXEC_EAST = identity("exec2", roles=("executive",), scope=Scope.REGION, branch_id="SH001", region="east")
ADMIN = identity("ops", roles=("admin",), scope=Scope.ALL)


@dataclass
class Opportunities:
    """The module's running service, and its database for seeding the customer directory."""

    svc: RunningService
    sessions: async_sessionmaker[AsyncSession]
    stub: opportunity_service_pb2_grpc.OpportunityServiceStub

    async def seed_customer(self, *, owner_id: str, team_id: str, branch_id: str, region: str) -> str:
        """Put a customer straight into the directory; return its id."""
        customer_id = f"c-{uuid.uuid4().hex[:12]}"
        async with self.sessions() as session, session.begin():
            await upsert(
                session, customer_id=customer_id, owner_id=owner_id, team_id=team_id, branch_id=branch_id, region=region
            )
        return customer_id

    async def set_stage(self, opportunity_id: str, stage: str) -> None:
        """Move an opportunity to ``stage`` in the database (no stage-changing call exists yet)."""
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(opportunities_table).where(opportunities_table.c.id == opportunity_id).values(stage=stage)
            )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def opportunities(
    private_nats: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Opportunities]:
    data_dir = tmp_path_factory.mktemp("opportunity")
    url = f"sqlite+aiosqlite:///{data_dir / 'opportunity.db'}"
    customer_db = f"sqlite+aiosqlite:///{data_dir / 'customer.db'}"
    # A real customer service answers the lookups of customers the directory does not know (unknown → NOT_FOUND).
    async with (
        running_service(CUSTOMER_SPEC, database_url=customer_db, nats_url=private_nats.url, data_dir=data_dir) as cust,
        running_service(
            SPEC,
            database_url=url,
            nats_url=private_nats.url,
            data_dir=data_dir,
            extra_env={"CRM_CUSTOMER_ADDR": f"127.0.0.1:{cust.grpc_port}"},
        ) as svc,
    ):
        engine = create_engine(normalise_url(url))
        try:
            yield Opportunities(
                svc, session_factory(engine), opportunity_service_pb2_grpc.OpportunityServiceStub(svc.channel)
            )
        finally:
            await engine.dispose()


def create_request(customer_id: str, **overrides: object) -> opportunity_service_pb2.CreateOpportunityRequest:
    fields: dict[str, object] = {
        "customer_id": customer_id,
        "name": "Li - 3-year large CD - 500k",
        "expected_amount": money_pb2.Money(amount="500000", currency="CNY"),
    }
    fields.update(overrides)
    return opportunity_service_pb2.CreateOpportunityRequest(**fields)  # type: ignore[arg-type]


async def test_create_get_scope_and_event(
    opportunities: Opportunities, private_nats: NatsServer, tmp_path: Path
) -> None:
    svc, stub = opportunities.svc, opportunities.stub
    customer_db = f"sqlite+aiosqlite:///{tmp_path / 'customer.db'}"
    async with running_service(
        CUSTOMER_SPEC, database_url=customer_db, nats_url=private_nats.url, data_dir=tmp_path
    ) as crm:
        created = await customer_service_pb2_grpc.CustomerServiceStub(crm.channel).CreateCustomer(
            customer_service_pb2.CreateCustomerRequest(kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL, name="李明"),
            metadata=crm.md(RM1),
            timeout=5,
        )
    customer_id = created.customer.id
    request = create_request(customer_id, request_id=f"r-{tmp_path.name}")

    # The customer reaches this service's directory only through the customer.created event.
    reply = await eventually_found(lambda: stub.CreateOpportunity(request, metadata=svc.md(RM1), timeout=5))
    opportunity = reply.opportunity
    assert opportunity.customer_id == customer_id and opportunity.owner_id == "rm1"
    assert opportunity.name == "Li - 3-year large CD - 500k"
    assert opportunity.stage == opportunity_pb2.STAGE_INITIAL_CONTACT
    assert opportunity.expected_amount == money_pb2.Money(amount="500000.00", currency="CNY")

    again = await stub.CreateOpportunity(request, metadata=svc.md(RM1), timeout=5)
    assert again.opportunity.id == opportunity.id
    # The request id is bound to its request: another one under it is refused, not answered with the first record.
    other = create_request(customer_id, request_id=request.request_id, name="Li - fund")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateOpportunity(other, metadata=svc.md(RM1), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert parse_failure(err.value).reason == "IDEMPOTENCY_KEY_REUSED"

    get = opportunity_service_pb2.GetOpportunityRequest(opportunity_id=opportunity.id)
    for insider in (RM1, HEAD):
        got = await stub.GetOpportunity(get, metadata=svc.md(insider), timeout=5)
        assert got.opportunity == opportunity
    for outsider in (RM2, OTHER_HEAD):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetOpportunity(get, metadata=svc.md(outsider), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateOpportunity(create_request(customer_id), metadata=svc.md(RM2), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    events = await messages_about(
        private_nats.url, "CRM_OPPORTUNITY", "crm.opportunity.opportunity.created", opportunity.id
    )
    assert len(events) == 1
    msg, envelope = events[0]
    assert msg.headers["Nats-Msg-Id"] == envelope.id and envelope.actor == "rm1"
    payload = events_pb2.OpportunityCreated()
    envelope.payload.Unpack(payload)
    assert payload.customer_id == customer_id and payload.owner_id == "rm1"
    assert payload.expected_amount.amount == "500000.00"


async def test_scope_follows_the_customer_directory(opportunities: Opportunities) -> None:
    svc, stub = opportunities.svc, opportunities.stub
    customer_id = await opportunities.seed_customer(owner_id="rm1", team_id="T1", branch_id="BJ001", region="north")
    created = await stub.CreateOpportunity(create_request(customer_id), metadata=svc.md(RM1), timeout=5)
    get = opportunity_service_pb2.GetOpportunityRequest(opportunity_id=created.opportunity.id)

    for insider in (LEAD_T1, HEAD, EXEC_NORTH, ADMIN):
        got = await stub.GetOpportunity(get, metadata=svc.md(insider), timeout=5)
        assert got.opportunity.id == created.opportunity.id
    for outsider in (RM2, LEAD_T2, OTHER_HEAD, EXEC_EAST):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetOpportunity(get, metadata=svc.md(outsider), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateOpportunity(create_request("c-unknown"), metadata=svc.md(ADMIN), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_permissions_are_checked(opportunities: Opportunities) -> None:
    svc, stub = opportunities.svc, opportunities.stub
    customer_id = await opportunities.seed_customer(owner_id="rm1", team_id="T1", branch_id="BJ001", region="north")
    created = await stub.CreateOpportunity(create_request(customer_id), metadata=svc.md(RM1), timeout=5)
    get = opportunity_service_pb2.GetOpportunityRequest(opportunity_id=created.opportunity.id)

    no_read = identity("rm1", permissions=("opportunity:write",))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetOpportunity(get, metadata=svc.md(no_read), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    no_write = identity("rm1", permissions=("opportunity:read",))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateOpportunity(create_request(customer_id), metadata=svc.md(no_write), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_invalid_input_names_each_field(opportunities: Opportunities) -> None:
    svc, stub = opportunities.svc, opportunities.stub
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateOpportunity(
            opportunity_service_pb2.CreateOpportunityRequest(name=" "), metadata=svc.md(RM1), timeout=5
        )
    failure = parse_failure(err.value)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in failure.violations} == {
        "customer_id",
        "name",
        "expected_amount.amount",
        "expected_amount.currency",
    }

    bad_money = create_request("c1", expected_amount=money_pb2.Money(amount="12.345", currency="cny"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateOpportunity(bad_money, metadata=svc.md(RM1), timeout=5)
    failure = parse_failure(err.value)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in failure.violations} == {"expected_amount.amount", "expected_amount.currency"}


def list_request(
    customer_id: str, *, open_only: bool = False, page_size: int = 0, page_token: str = ""
) -> opportunity_service_pb2.ListOpportunitiesRequest:
    return opportunity_service_pb2.ListOpportunitiesRequest(
        customer_id=customer_id,
        open_only=open_only,
        page=paging_pb2.PageRequest(page_size=page_size, page_token=page_token),
    )


async def test_list_pages_newest_first_and_filters_open(opportunities: Opportunities) -> None:
    svc, stub = opportunities.svc, opportunities.stub
    customer_id = await opportunities.seed_customer(owner_id="rm1", team_id="T1", branch_id="BJ001", region="north")
    other_customer = await opportunities.seed_customer(owner_id="rm1", team_id="T1", branch_id="BJ001", region="north")
    created = []
    for n in range(5):
        reply = await stub.CreateOpportunity(
            create_request(customer_id, name=f"deal {n}"), metadata=svc.md(RM1), timeout=5
        )
        created.append(reply.opportunity.id)
    await stub.CreateOpportunity(create_request(other_customer), metadata=svc.md(RM1), timeout=5)
    newest_first = list(reversed(created))

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListOpportunities(
            list_request(customer_id, page_size=2, page_token=token), metadata=svc.md(RM1), timeout=5
        )
        assert len(page.opportunities) <= 2
        seen += [o.id for o in page.opportunities]
        pages += 1
        token = page.page.next_page_token
        if not token:
            break
    assert seen == newest_first and pages == 3
    assert {o.customer_id for o in page.opportunities} == {customer_id}

    everything = await stub.ListOpportunities(list_request(customer_id), metadata=svc.md(RM1), timeout=5)
    assert [o.id for o in everything.opportunities] == newest_first and not everything.page.next_page_token
    assert everything.opportunities[0].expected_amount == money_pb2.Money(amount="500000.00", currency="CNY")
    assert everything.opportunities[0].name == "deal 4"

    await opportunities.set_stage(created[1], "won")
    await opportunities.set_stage(created[3], "lost")
    await opportunities.set_stage(created[2], "negotiation")
    open_ones = await stub.ListOpportunities(list_request(customer_id, open_only=True), metadata=svc.md(RM1), timeout=5)
    assert [o.id for o in open_ones.opportunities] == [created[4], created[2], created[0]]
    assert open_ones.opportunities[1].stage == opportunity_pb2.STAGE_NEGOTIATION
    first = await stub.ListOpportunities(
        list_request(customer_id, open_only=True, page_size=2), metadata=svc.md(RM1), timeout=5
    )
    rest = await stub.ListOpportunities(
        list_request(customer_id, open_only=True, page_size=2, page_token=first.page.next_page_token),
        metadata=svc.md(RM1),
        timeout=5,
    )
    assert [o.id for o in first.opportunities] == [created[4], created[2]]
    assert [o.id for o in rest.opportunities] == [created[0]] and not rest.page.next_page_token


async def test_list_applies_scope_and_permission(opportunities: Opportunities) -> None:
    svc, stub = opportunities.svc, opportunities.stub
    customer_id = await opportunities.seed_customer(owner_id="rm1", team_id="T1", branch_id="BJ001", region="north")
    created = await stub.CreateOpportunity(create_request(customer_id), metadata=svc.md(RM1), timeout=5)

    for insider in (RM1, LEAD_T1, HEAD, EXEC_NORTH, ADMIN):
        got = await stub.ListOpportunities(list_request(customer_id), metadata=svc.md(insider), timeout=5)
        assert [o.id for o in got.opportunities] == [created.opportunity.id]
    # Outside the scope, or unknown here: NOT_FOUND, never an empty list that would confirm the customer exists.
    for outsider in (RM2, LEAD_T2, OTHER_HEAD, EXEC_EAST):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListOpportunities(list_request(customer_id), metadata=svc.md(outsider), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListOpportunities(list_request("c-unknown"), metadata=svc.md(ADMIN), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    no_read = identity("rm1", permissions=("opportunity:write",))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListOpportunities(list_request(customer_id), metadata=svc.md(no_read), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # A customer in scope with nothing in the pipeline answers an empty page.
    empty = await opportunities.seed_customer(owner_id="rm1", team_id="T1", branch_id="BJ001", region="north")
    got = await stub.ListOpportunities(list_request(empty), metadata=svc.md(RM1), timeout=5)
    assert list(got.opportunities) == [] and not got.page.next_page_token
