"""The ticket service over real gRPC on loopback, with a real SQLite database and a real NATS.

One service runs for the whole module: stopping a service with durable consumers takes a while (it drains its
NATS connection), and the tests share nothing but the service, each using its own customers. The customer
directory is fed by the real customer service (its ``customer.created`` event crossing JetStream) or, where a
test needs customers in many places, by the directory's upsert on the service's database. The same queries run
on PostgreSQL in ``test_ticket_store.py``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crm.common.v1 import paging_pb2
from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc
from crm.ticket.v1 import events_pb2, ticket_pb2, ticket_service_pb2, ticket_service_pb2_grpc
from crm_customer.server import SPEC as CUSTOMER_SPEC
from crm_platform.auth_context import Scope
from crm_platform.db import create_engine, normalise_url, session_factory
from crm_platform.directory import upsert
from crm_platform.grpc_client import parse_failure
from crm_testing.nats_server import NatsServer
from crm_testing.services import RunningService, eventually_found, identity, running_service
from crm_testing.streams import messages_about
from crm_ticket.server import SPEC
from crm_ticket.store import tickets as tickets_table

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
class Tickets:
    """The module's running service, and its database for seeding the customer directory."""

    svc: RunningService
    sessions: async_sessionmaker[AsyncSession]
    stub: ticket_service_pb2_grpc.TicketServiceStub

    async def seed_customer(self, *, owner_id: str, team_id: str, branch_id: str, region: str) -> str:
        """Put a customer straight into the directory; return its id."""
        customer_id = f"c-{uuid.uuid4().hex[:12]}"
        async with self.sessions() as session, session.begin():
            await upsert(
                session, customer_id=customer_id, owner_id=owner_id, team_id=team_id, branch_id=branch_id, region=region
            )
        return customer_id

    async def set_status(self, ticket_id: str, status: str) -> None:
        """Move a ticket to ``status`` in the database (no resolving or closing call exists yet)."""
        async with self.sessions() as session, session.begin():
            await session.execute(update(tickets_table).where(tickets_table.c.id == ticket_id).values(status=status))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tickets(private_nats: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Tickets]:
    data_dir = tmp_path_factory.mktemp("ticket")
    url = f"sqlite+aiosqlite:///{data_dir / 'ticket.db'}"
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
            yield Tickets(svc, session_factory(engine), ticket_service_pb2_grpc.TicketServiceStub(svc.channel))
        finally:
            await engine.dispose()


def open_request(customer_id: str, **overrides: object) -> ticket_service_pb2.OpenTicketRequest:
    fields: dict[str, object] = {
        "customer_id": customer_id,
        "kind": ticket_pb2.TICKET_KIND_COMPLAINT,
        "urgency": ticket_pb2.URGENCY_HIGH,
        "description": "理财产品到期未收到款项",
    }
    fields.update(overrides)
    return ticket_service_pb2.OpenTicketRequest(**fields)  # type: ignore[arg-type]


async def test_open_get_scope_and_event(tickets: Tickets, private_nats: NatsServer, tmp_path: Path) -> None:
    svc, stub = tickets.svc, tickets.stub
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
    request = open_request(customer_id, request_id=f"r-{tmp_path.name}")

    # The customer reaches this service's directory only through the customer.created event.
    reply = await eventually_found(lambda: stub.OpenTicket(request, metadata=svc.md(RM1), timeout=5))
    ticket = reply.ticket
    assert ticket.customer_id == customer_id and ticket.status == ticket_pb2.TICKET_STATUS_OPEN
    assert ticket.kind == ticket_pb2.TICKET_KIND_COMPLAINT and ticket.urgency == ticket_pb2.URGENCY_HIGH
    assert ticket.description == "理财产品到期未收到款项"
    opened = ticket.created_at.ToDatetime(tzinfo=dt.UTC)
    assert ticket.sla_deadline.ToDatetime(tzinfo=dt.UTC) == opened + dt.timedelta(hours=4)

    again = await stub.OpenTicket(request, metadata=svc.md(RM1), timeout=5)
    assert again.ticket.id == ticket.id
    # The request id is bound to its request: another one under it is refused, not answered with the first ticket.
    other = open_request(customer_id, request_id=request.request_id, description="另一件事")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.OpenTicket(other, metadata=svc.md(RM1), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert parse_failure(err.value).reason == "IDEMPOTENCY_KEY_REUSED"

    get = ticket_service_pb2.GetTicketRequest(ticket_id=ticket.id)
    for insider in (RM1, HEAD):
        got = await stub.GetTicket(get, metadata=svc.md(insider), timeout=5)
        assert got.ticket == ticket
    for outsider in (RM2, OTHER_HEAD):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetTicket(get, metadata=svc.md(outsider), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.OpenTicket(open_request(customer_id), metadata=svc.md(RM2), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    events = await messages_about(private_nats.url, "CRM_TICKET", "crm.ticket.ticket.opened", ticket.id)
    assert len(events) == 1
    msg, envelope = events[0]
    assert msg.headers["Nats-Msg-Id"] == envelope.id and envelope.actor == "rm1"
    payload = events_pb2.TicketOpened()
    envelope.payload.Unpack(payload)
    assert payload == events_pb2.TicketOpened(
        ticket_id=ticket.id,
        customer_id=customer_id,
        kind=ticket_pb2.TICKET_KIND_COMPLAINT,
        urgency=ticket_pb2.URGENCY_HIGH,
    )


async def test_scope_follows_the_customer_directory(tickets: Tickets) -> None:
    svc, stub = tickets.svc, tickets.stub
    customer_id = await tickets.seed_customer(owner_id="rm1", team_id="T1", branch_id="BJ001", region="north")
    opened = await stub.OpenTicket(open_request(customer_id), metadata=svc.md(RM1), timeout=5)
    get = ticket_service_pb2.GetTicketRequest(ticket_id=opened.ticket.id)

    for insider in (LEAD_T1, HEAD, EXEC_NORTH, ADMIN):
        got = await stub.GetTicket(get, metadata=svc.md(insider), timeout=5)
        assert got.ticket.id == opened.ticket.id
    for outsider in (RM2, LEAD_T2, OTHER_HEAD, EXEC_EAST):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetTicket(get, metadata=svc.md(outsider), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.OpenTicket(open_request("c-unknown"), metadata=svc.md(ADMIN), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_permissions_are_checked(tickets: Tickets) -> None:
    svc, stub = tickets.svc, tickets.stub
    customer_id = await tickets.seed_customer(owner_id="rm1", team_id="T1", branch_id="BJ001", region="north")
    opened = await stub.OpenTicket(open_request(customer_id), metadata=svc.md(RM1), timeout=5)
    get = ticket_service_pb2.GetTicketRequest(ticket_id=opened.ticket.id)

    no_read = identity("rm1", permissions=("ticket:write",))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetTicket(get, metadata=svc.md(no_read), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    no_write = identity("rm1", permissions=("ticket:read",))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.OpenTicket(open_request(customer_id), metadata=svc.md(no_write), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_invalid_input_names_each_field(tickets: Tickets) -> None:
    svc, stub = tickets.svc, tickets.stub
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.OpenTicket(ticket_service_pb2.OpenTicketRequest(description=" "), metadata=svc.md(RM1), timeout=5)
    failure = parse_failure(err.value)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in failure.violations} == {"customer_id", "kind", "urgency", "description"}

    too_long = open_request("c1", urgency=ticket_pb2.URGENCY_UNSPECIFIED, description="x" * 4001)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.OpenTicket(too_long, metadata=svc.md(RM1), timeout=5)
    failure = parse_failure(err.value)
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in failure.violations} == {"urgency", "description"}


def list_request(
    customer_id: str, *, open_only: bool = False, page_size: int = 0, page_token: str = ""
) -> ticket_service_pb2.ListTicketsRequest:
    return ticket_service_pb2.ListTicketsRequest(
        customer_id=customer_id,
        open_only=open_only,
        page=paging_pb2.PageRequest(page_size=page_size, page_token=page_token),
    )


async def test_list_pages_newest_first_and_filters_open(tickets: Tickets) -> None:
    svc, stub = tickets.svc, tickets.stub
    customer_id = await tickets.seed_customer(owner_id="rm1", team_id="T1", branch_id="BJ001", region="north")
    other_customer = await tickets.seed_customer(owner_id="rm1", team_id="T1", branch_id="BJ001", region="north")
    opened = []
    for n in range(5):
        reply = await stub.OpenTicket(
            open_request(customer_id, description=f"matter {n}"), metadata=svc.md(RM1), timeout=5
        )
        opened.append(reply.ticket.id)
    await stub.OpenTicket(open_request(other_customer), metadata=svc.md(RM1), timeout=5)
    newest_first = list(reversed(opened))

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListTickets(
            list_request(customer_id, page_size=2, page_token=token), metadata=svc.md(RM1), timeout=5
        )
        assert len(page.tickets) <= 2
        seen += [t.id for t in page.tickets]
        pages += 1
        token = page.page.next_page_token
        if not token:
            break
    assert seen == newest_first and pages == 3

    everything = await stub.ListTickets(list_request(customer_id), metadata=svc.md(RM1), timeout=5)
    assert [t.id for t in everything.tickets] == newest_first and not everything.page.next_page_token
    assert everything.tickets[0].description == "matter 4"
    assert {t.customer_id for t in everything.tickets} == {customer_id}

    await tickets.set_status(opened[1], "resolved")
    await tickets.set_status(opened[3], "closed")
    open_ones = await stub.ListTickets(list_request(customer_id, open_only=True), metadata=svc.md(RM1), timeout=5)
    assert [t.id for t in open_ones.tickets] == [opened[4], opened[2], opened[0]]
    assert {t.status for t in open_ones.tickets} == {ticket_pb2.TICKET_STATUS_OPEN}
    first = await stub.ListTickets(
        list_request(customer_id, open_only=True, page_size=2), metadata=svc.md(RM1), timeout=5
    )
    rest = await stub.ListTickets(
        list_request(customer_id, open_only=True, page_size=2, page_token=first.page.next_page_token),
        metadata=svc.md(RM1),
        timeout=5,
    )
    assert [t.id for t in first.tickets] == [opened[4], opened[2]]
    assert [t.id for t in rest.tickets] == [opened[0]] and not rest.page.next_page_token


async def test_list_applies_scope_and_permission(tickets: Tickets) -> None:
    svc, stub = tickets.svc, tickets.stub
    customer_id = await tickets.seed_customer(owner_id="rm1", team_id="T1", branch_id="BJ001", region="north")
    opened = await stub.OpenTicket(open_request(customer_id), metadata=svc.md(RM1), timeout=5)

    for insider in (RM1, LEAD_T1, HEAD, EXEC_NORTH, ADMIN):
        got = await stub.ListTickets(list_request(customer_id), metadata=svc.md(insider), timeout=5)
        assert [t.id for t in got.tickets] == [opened.ticket.id]
    # Outside the scope, or unknown here: NOT_FOUND, never an empty list that would confirm the customer exists.
    for outsider in (RM2, LEAD_T2, OTHER_HEAD, EXEC_EAST):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListTickets(list_request(customer_id), metadata=svc.md(outsider), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListTickets(list_request("c-unknown"), metadata=svc.md(ADMIN), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    no_read = identity("rm1", permissions=("ticket:write",))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListTickets(list_request(customer_id), metadata=svc.md(no_read), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # A customer in scope without tickets answers an empty page.
    empty = await tickets.seed_customer(owner_id="rm1", team_id="T1", branch_id="BJ001", region="north")
    got = await stub.ListTickets(list_request(empty), metadata=svc.md(RM1), timeout=5)
    assert list(got.tickets) == [] and not got.page.next_page_token


async def test_a_ticket_routed_to_a_back_office_handler_is_theirs_to_see(tickets: Tickets) -> None:
    """The policy's back-office role has scope ``own`` and owns no customer: a ticket routed to them is visible
    to them as a party to it, not to another handler, and the customer's file stays out of their reach."""
    from crm_platform.policy import default_policy

    svc, stub = tickets.svc, tickets.stub
    customer_id = await tickets.seed_customer(owner_id="rm1", team_id="T1", branch_id="BJ001", region="north")
    routed = await stub.OpenTicket(
        open_request(customer_id, kind=ticket_pb2.TICKET_KIND_SERVICE_REQUEST, handler_id="u-bo1"),
        metadata=svc.md(RM1),
        timeout=5,
    )
    policy = default_policy()
    handler = policy.identity("u-bo1", ("back_office",), "BJ001", "", "north", "req-bo1")
    other = policy.identity("u-bo2", ("back_office",), "BJ001", "", "north", "req-bo2")
    get = ticket_service_pb2.GetTicketRequest(ticket_id=routed.ticket.id)
    seen = await stub.GetTicket(get, metadata=svc.md(handler), timeout=5)
    assert (seen.ticket.handler_id, seen.ticket.opened_by) == ("u-bo1", "rm1")
    for outsider in (other,):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetTicket(get, metadata=svc.md(outsider), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListTickets(
            ticket_service_pb2.ListTicketsRequest(customer_id=customer_id), metadata=svc.md(handler), timeout=5
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
