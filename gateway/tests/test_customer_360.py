"""Customer 360 and the per-customer list routes, through a real gateway in front of the real customer,
interaction, opportunity and ticket services (real gRPC on loopback, one SQLite file per service, real NATS).

The other services learn of a customer only from the customer service's ``customer.created`` event, so each
test waits (bounded) until every directory knows the customer before adding records to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import pytest
from sqlalchemy import update

from crm.common.v1 import money_pb2, paging_pb2
from crm.interaction.v1 import interaction_pb2, interaction_service_pb2, interaction_service_pb2_grpc
from crm.opportunity.v1 import opportunity_service_pb2, opportunity_service_pb2_grpc
from crm.ticket.v1 import ticket_pb2, ticket_service_pb2, ticket_service_pb2_grpc
from crm_customer.server import SPEC as CUSTOMER
from crm_gateway.app import create_app
from crm_gateway.config import Settings
from crm_interaction.server import SPEC as INTERACTION
from crm_opportunity.server import SPEC as OPPORTUNITY
from crm_opportunity.store import opportunities as opportunities_table
from crm_platform.config import load
from crm_platform.db import create_engine, normalise_url
from crm_platform.logging import JsonFormatter
from crm_testing.nats_server import NatsServer, free_port
from crm_testing.services import TEST_SECRET, RunningService, identity, running_service
from crm_ticket.server import SPEC as TICKET
from crm_ticket.store import tickets as tickets_table
from gateway_harness import Gateway, served

T = TypeVar("T")

# rm1 as the gateway signs it for the services (the demo seed's user id, team, branch and region).
RM1 = identity("u-rm1")
SERVICES = {"customer": CUSTOMER, "interaction": INTERACTION, "opportunity": OPPORTUNITY, "ticket": TICKET}


def _db_url(tmp_path: Path, name: str) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / name / f'{name}.db'}"


@contextlib.asynccontextmanager
async def serving_gateway(tmp_path: Path, nats_url: str, addresses: Mapping[str, str]) -> AsyncIterator[Gateway]:
    """The gateway on a real uvicorn in this event loop, calling the services at ``addresses`` (name → host:port)."""
    unused = f"127.0.0.1:{free_port()}"
    env = {f"CRM_{s}_ADDR": unused for s in ("CUSTOMER", "INTERACTION", "OPPORTUNITY", "TICKET", "NOTIFICATION")}
    env |= {"CRM_REPORTING_ADDR": unused, **{f"CRM_{name.upper()}_ADDR": addr for name, addr in addresses.items()}}
    (tmp_path / "gateway").mkdir(exist_ok=True)
    settings = load(
        Settings,
        {
            "CRM_DATA_DIR": str(tmp_path / "gateway"),
            "CRM_NATS_URL": nats_url,
            "CRM_INTERNAL_SECRET": TEST_SECRET,
            "GATEWAY_DATABASE_URL": _db_url(tmp_path, "gateway"),
            "CRM_DEMO": "1",
            **env,
        },
    )
    app = create_app(settings)
    async with served(app) as gateway:  # the production HTTP protocol, in this event loop
        yield gateway


@dataclass
class Stack:
    """The gateway and the four services behind it; ``stop_ticket`` takes the ticket service down mid-test."""

    gateway: Gateway
    services: dict[str, RunningService]
    db_urls: dict[str, str]
    stop_ticket: Callable[[], Awaitable[None]]


@pytest.fixture
async def stack(private_nats: NatsServer, tmp_path: Path) -> AsyncIterator[Stack]:
    async with contextlib.AsyncExitStack() as outer, contextlib.AsyncExitStack() as ticket_block:
        running: dict[str, RunningService] = {}
        db_urls: dict[str, str] = {}
        for name, spec in SERVICES.items():
            (tmp_path / name).mkdir()
            db_urls[name] = _db_url(tmp_path, name)  # one database file per service, never shared
            block = ticket_block if name == "ticket" else outer
            # The customer service first: the others ask it about customers their directory does not know yet.
            customer = {"CRM_CUSTOMER_ADDR": f"127.0.0.1:{running['customer'].grpc_port}"} if running else {}
            running[name] = await block.enter_async_context(
                running_service(
                    spec,
                    database_url=db_urls[name],
                    nats_url=private_nats.url,
                    data_dir=tmp_path / name,
                    extra_env=customer,
                )
            )
        addresses = {name: f"127.0.0.1:{svc.grpc_port}" for name, svc in running.items()}
        gateway = await outer.enter_async_context(serving_gateway(tmp_path, private_nats.url, addresses))
        yield Stack(gateway, running, db_urls, ticket_block.aclose)


async def eventually_known(call: Callable[[], Awaitable[T]], timeout: float = 15.0) -> T:
    """Retry ``call`` while it answers NOT_FOUND (the service's directory has not heard of the customer yet)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.05)


async def create_customer(gateway: Gateway, headers: dict[str, str], name: str = "李明") -> str:
    reply = await gateway.client.post("/api/v1/customers", json={"kind": "individual", "name": name}, headers=headers)
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


async def wait_until_directories_know(services: Mapping[str, RunningService], customer_id: str) -> None:
    """Bounded polling until the interaction, opportunity and ticket services have each learnt the customer."""
    page = paging_pb2.PageRequest(page_size=1)
    interaction = services["interaction"]
    opportunity = services["opportunity"]
    ticket = services["ticket"]
    await eventually_known(
        lambda: interaction_service_pb2_grpc.InteractionServiceStub(interaction.channel).ListInteractions(
            interaction_service_pb2.ListInteractionsRequest(customer_id=customer_id, page=page),
            metadata=interaction.md(RM1),
            timeout=5,
        )
    )
    await eventually_known(
        lambda: opportunity_service_pb2_grpc.OpportunityServiceStub(opportunity.channel).ListOpportunities(
            opportunity_service_pb2.ListOpportunitiesRequest(customer_id=customer_id, page=page),
            metadata=opportunity.md(RM1),
            timeout=5,
        )
    )
    await eventually_known(
        lambda: ticket_service_pb2_grpc.TicketServiceStub(ticket.channel).ListTickets(
            ticket_service_pb2.ListTicketsRequest(customer_id=customer_id, page=page),
            metadata=ticket.md(RM1),
            timeout=5,
        )
    )


async def set_column(db_url: str, table: Any, row_id: str, **values: str) -> None:
    """Change a row in a service's own database (no call moves a stage or closes a ticket yet)."""
    engine = create_engine(normalise_url(db_url))
    try:
        async with engine.begin() as conn:
            await conn.execute(update(table).where(table.c.id == row_id).values(**values))
    finally:
        await engine.dispose()


@dataclass
class Records:
    """What a test put into the services for one customer, newest last."""

    interactions: list[str]
    opportunities: list[str]
    tickets: list[str]


async def add_records(stack: Stack, customer_id: str) -> Records:
    """12 interactions, 3 opportunities (one won, one lost) and 3 tickets (one closed), as rm1 over gRPC."""
    interaction, opportunity, ticket = (stack.services[n] for n in ("interaction", "opportunity", "ticket"))
    interactions = []
    for n in range(12):
        logged = await interaction_service_pb2_grpc.InteractionServiceStub(interaction.channel).LogInteraction(
            interaction_service_pb2.LogInteractionRequest(
                customer_id=customer_id, channel=interaction_pb2.CHANNEL_PHONE, summary=f"call {n}"
            ),
            metadata=interaction.md(RM1),
            timeout=5,
        )
        interactions.append(logged.interaction.id)
    opportunities = []
    for name in ("CD 500k", "Fund", "Insurance"):
        created = await opportunity_service_pb2_grpc.OpportunityServiceStub(opportunity.channel).CreateOpportunity(
            opportunity_service_pb2.CreateOpportunityRequest(
                customer_id=customer_id, name=name, expected_amount=money_pb2.Money(amount="500000", currency="CNY")
            ),
            metadata=opportunity.md(RM1),
            timeout=5,
        )
        opportunities.append(created.opportunity.id)
    await set_column(stack.db_urls["opportunity"], opportunities_table, opportunities[1], stage="won")
    await set_column(stack.db_urls["opportunity"], opportunities_table, opportunities[2], stage="lost")
    tickets = []
    for urgency in (ticket_pb2.URGENCY_HIGH, ticket_pb2.URGENCY_LOW, ticket_pb2.URGENCY_NORMAL):
        opened = await ticket_service_pb2_grpc.TicketServiceStub(ticket.channel).OpenTicket(
            ticket_service_pb2.OpenTicketRequest(
                customer_id=customer_id,
                kind=ticket_pb2.TICKET_KIND_COMPLAINT,
                urgency=urgency,
                description="理财产品到期未收到款项",
            ),
            metadata=ticket.md(RM1),
            timeout=5,
        )
        tickets.append(opened.ticket.id)
    await set_column(stack.db_urls["ticket"], tickets_table, tickets[1], status="closed")
    return Records(interactions, opportunities, tickets)


async def all_pages(client: httpx.AsyncClient, path: str, headers: dict[str, str], **params: Any) -> list[list[str]]:
    """The ids of every page of a list route, following ``next_cursor``."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        reply = await client.get(path, params=query, headers=headers)
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert set(body) == {"items", "next_cursor"}
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


async def test_list_routes_page_and_map_the_contract_shapes(stack: Stack) -> None:
    gateway = stack.gateway
    rm1 = await gateway.bearer("rm1")
    customer_id = await create_customer(gateway, rm1)
    await wait_until_directories_know(stack.services, customer_id)
    records = await add_records(stack, customer_id)
    base = f"/api/v1/customers/{customer_id}"

    pages = await all_pages(gateway.client, f"{base}/interactions", rm1, limit=5)
    assert pages == [list(reversed(records.interactions))[i : i + 5] for i in (0, 5, 10)]
    interaction = (await gateway.client.get(f"{base}/interactions", headers=rm1)).json()["items"][0]
    assert interaction["channel"] == "phone" and interaction["summary"] == "call 11"
    assert interaction["occurred_at"].endswith("Z") and interaction["created_at"].endswith("Z")

    assert await all_pages(gateway.client, f"{base}/opportunities", rm1, limit=2) == [
        list(reversed(records.opportunities))[:2],
        records.opportunities[:1],
    ]
    open_opportunities = await gateway.client.get(f"{base}/opportunities", params={"open_only": "true"}, headers=rm1)
    assert open_opportunities.json() == {
        "items": [
            {
                "id": records.opportunities[0],
                "customer_id": customer_id,
                "name": "CD 500k",
                "stage": "initial_contact",
                "expected_amount": {"amount": "500000.00", "currency": "CNY"},
                "owner_id": "u-rm1",
                "created_at": open_opportunities.json()["items"][0]["created_at"],
                "updated_at": open_opportunities.json()["items"][0]["updated_at"],
            }
        ],
        "next_cursor": None,
    }
    assert open_opportunities.json()["items"][0]["created_at"].endswith("Z")

    assert await all_pages(gateway.client, f"{base}/tickets", rm1) == [list(reversed(records.tickets))]
    open_tickets = (await gateway.client.get(f"{base}/tickets", params={"open_only": "true"}, headers=rm1)).json()
    assert [t["id"] for t in open_tickets["items"]] == [records.tickets[2], records.tickets[0]]
    newest = open_tickets["items"][0]
    assert (newest["kind"], newest["urgency"], newest["status"]) == ("complaint", "normal", "open")
    assert newest["sla_deadline"].endswith("Z") and newest["created_at"].endswith("Z")

    for path in ("interactions", "opportunities", "tickets"):
        too_many = await gateway.client.get(f"{base}/{path}", params={"limit": 501}, headers=rm1)
        assert too_many.status_code == 422, path
        # Out of scope answers 404 like a customer that does not exist; a role without the permission, 403.
        outsider = await gateway.client.get(f"{base}/{path}", headers=await gateway.bearer("rm2"))
        assert outsider.status_code == 404, path
        unknown = await gateway.client.get(f"/api/v1/customers/c-unknown/{path}", headers=rm1)
        assert unknown.status_code == 404, path
    teller = await gateway.bearer("teller1")
    assert (await gateway.client.get(f"{base}/tickets", headers=teller)).status_code == 403


async def test_360_composes_every_part_and_degrades_to_a_partial_answer(stack: Stack) -> None:
    gateway = stack.gateway
    rm1 = await gateway.bearer("rm1")
    customer_id = await create_customer(gateway, rm1)
    await wait_until_directories_know(stack.services, customer_id)
    records = await add_records(stack, customer_id)
    path = f"/api/v1/customers/{customer_id}/360"

    reply = await gateway.client.get(path, headers=rm1)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"customer", "interactions", "opportunities", "tickets", "missing"}
    assert body["customer"]["id"] == customer_id and body["customer"]["name"] == "李明"
    assert [i["id"] for i in body["interactions"]] == list(reversed(records.interactions))[:10]
    assert [o["id"] for o in body["opportunities"]] == [records.opportunities[0]]
    assert body["opportunities"][0]["expected_amount"] == {"amount": "500000.00", "currency": "CNY"}
    assert [t["id"] for t in body["tickets"]] == [records.tickets[2], records.tickets[0]]
    assert body["missing"] == []

    # The head of the branch sees the same; an RM, branch head or teller without the customer in scope gets 404.
    head = (await gateway.client.get(path, headers=await gateway.bearer("head"))).json()
    assert head["missing"] == [] and [t["id"] for t in head["tickets"]] == [records.tickets[2], records.tickets[0]]
    for outsider in ("rm2", "head2", "teller1"):
        denied = await gateway.client.get(path, headers=await gateway.bearer(outsider))
        assert denied.status_code == 404, outsider
        assert "interactions" not in denied.text
    assert (await gateway.client.get("/api/v1/customers/c-unknown/360", headers=rm1)).status_code == 404
    assert (await gateway.client.get(path, headers=await gateway.bearer("admin"))).status_code == 403

    # The executive reads customers and pipelines, not contact logs or tickets: those parts are refused.
    executive = await gateway.client.get(path, headers=await gateway.bearer("exec"))
    assert executive.status_code == 200, executive.text
    partial = executive.json()
    assert partial["interactions"] is None and partial["tickets"] is None
    assert [o["id"] for o in partial["opportunities"]] == [records.opportunities[0]]
    assert partial["missing"] == [
        {"part": "interactions", "reason": "forbidden"},
        {"part": "tickets", "reason": "forbidden"},
    ]

    await stack.stop_ticket()
    down = await gateway.client.get(path, headers=rm1)
    assert down.status_code == 200, down.text
    body = down.json()
    assert body["tickets"] is None
    assert body["missing"] == [{"part": "tickets", "reason": "service_unavailable"}]
    assert body["customer"]["id"] == customer_id
    assert [i["id"] for i in body["interactions"]] == list(reversed(records.interactions))[:10]
    assert [o["id"] for o in body["opportunities"]] == [records.opportunities[0]]
    # The ticket list on its own route fails as a whole: 503, never a stack trace.
    lines: list[dict[str, object]] = []
    capture = _JsonLines(lines)
    logger = logging.getLogger("crm_gateway.middleware")
    logger.addHandler(capture)
    try:
        tickets = await gateway.client.get(f"/api/v1/customers/{customer_id}/tickets", headers=rm1)
    finally:
        logger.removeHandler(capture)
    assert tickets.status_code == 503 and tickets.headers["content-type"].startswith("application/problem+json")
    # …and the operators get one JSON log line for it: the route (not the path), who, and the request id (the
    # trace id too, logged inside the request's span: see libs/platform/tests/test_logging.py).
    (logged,) = [line for line in lines if line["msg"] == "request failed"]
    assert (logged["status"], logged["route"], logged["user"]) == (
        503,
        "/api/v1/customers/{customer_id}/tickets",
        "u-rm1",
    )
    assert logged["request_id"] == tickets.headers["x-request-id"] and logged["level"] == "error"


class _JsonLines(logging.Handler):
    """Collects records as the JSON lines the processes write (formatted when logged, inside the request's span)."""

    def __init__(self, lines: list[dict[str, object]]) -> None:
        super().__init__(logging.WARNING)
        self._lines = lines
        self._formatter = JsonFormatter("gateway")

    def emit(self, record: logging.LogRecord) -> None:
        self._lines.append(json.loads(self._formatter.format(record)))


async def test_360_names_a_silent_service_as_timed_out(private_nats: NatsServer, tmp_path: Path) -> None:
    # A listener that accepts connections and never answers: a call to it can only end by its deadline.
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    silent_addr = f"127.0.0.1:{silent.sockets[0].getsockname()[1]}"
    (tmp_path / "customer").mkdir()
    try:
        async with (
            running_service(
                CUSTOMER,
                database_url=_db_url(tmp_path, "customer"),
                nats_url=private_nats.url,
                data_dir=tmp_path / "customer",
            ) as customer,
            serving_gateway(
                tmp_path,
                private_nats.url,
                {"customer": f"127.0.0.1:{customer.grpc_port}", "opportunity": silent_addr},
            ) as gateway,
        ):
            rm1 = await gateway.bearer("rm1")
            customer_id = await create_customer(gateway, rm1)
            reply = await gateway.client.get(f"/api/v1/customers/{customer_id}/360", headers=rm1)
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["customer"]["id"] == customer_id
            assert body["interactions"] is None and body["opportunities"] is None and body["tickets"] is None
            # Interaction and ticket addresses are unused ports (nothing listens); the opportunity one is silent.
            assert body["missing"] == [
                {"part": "interactions", "reason": "service_unavailable"},
                {"part": "opportunities", "reason": "timeout"},
                {"part": "tickets", "reason": "service_unavailable"},
            ]
    finally:
        for writer in held:
            writer.close()
        silent.close()
        await silent.wait_closed()
