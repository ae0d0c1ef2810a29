"""``/api/v1/customers/{id}/360``: one customer's profile with what the other services hold about them.

The profile comes first and decides the answer (404 outside the caller's scope, 403 without ``customer:read``).
Then the parts are fetched concurrently, each under its own short deadline and with its own error capture, so a
service that is down, slow or refusing costs only its part: the answer is still 200, the part is ``null`` and
``missing`` says which part is absent and why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import grpc
import msgspec
from litestar import Request, get
from litestar.params import Parameter

from crm.common.v1 import paging_pb2
from crm.customer.v1 import customer_service_pb2
from crm.interaction.v1 import interaction_service_pb2
from crm.opportunity.v1 import opportunity_service_pb2
from crm.ticket.v1 import ticket_service_pb2
from crm_gateway.schemas.customers import CustomerOut
from crm_gateway.schemas.interactions import InteractionOut
from crm_gateway.schemas.opportunities import OpportunityOut
from crm_gateway.schemas.tickets import TicketOut
from crm_platform.auth_context import Identity
from crm_platform.clients import CallFailed, Clients

log = logging.getLogger(__name__)

# Each part gets at most this long (or the gateway's call timeout, when shorter): a slow service must not hold
# the whole page back.
PART_DEADLINE_SECONDS = 1.5
RECENT_INTERACTIONS = 10
# Open opportunities and tickets shown; the complete lists are on their own routes (``?open_only=true``).
OPEN_ITEMS = 50

Reason = Literal["service_unavailable", "timeout", "forbidden", "not_found", "error"]

_REASONS: dict[grpc.StatusCode, Reason] = {
    grpc.StatusCode.UNAVAILABLE: "service_unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "timeout",
    grpc.StatusCode.PERMISSION_DENIED: "forbidden",
    # The profile is in scope but the part's service has not yet learnt of the customer (its directory is fed by
    # events): the part is unknown, not empty.
    grpc.StatusCode.NOT_FOUND: "not_found",
}

_CUSTOMER_ID = Annotated[str, Parameter(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]


class MissingPart(msgspec.Struct):
    """A part left out of the answer, and why."""

    part: str
    reason: Reason


class Customer360Out(msgspec.Struct):
    """The customer's profile and the parts of the other services; a ``null`` part is named in ``missing``."""

    customer: CustomerOut
    interactions: list[InteractionOut] | None
    opportunities: list[OpportunityOut] | None
    tickets: list[TicketOut] | None
    missing: list[MissingPart]


@dataclass(frozen=True)
class _Part:
    """How to fetch one part: the call, the permission it needs, and how to map the reply."""

    name: str
    permission: str
    call: Callable[[Clients, Identity], Awaitable[Any]]
    items: Callable[[Any], Sequence[Any]]


def _parts(customer_id: str) -> list[_Part]:
    return [
        _Part(
            "interactions",
            "interaction:read",
            lambda clients, identity: clients.interaction.list_interactions(
                identity,
                interaction_service_pb2.ListInteractionsRequest(
                    customer_id=customer_id, page=paging_pb2.PageRequest(page_size=RECENT_INTERACTIONS)
                ),
            ),
            lambda reply: [InteractionOut.from_proto(i) for i in reply.interactions],
        ),
        _Part(
            "opportunities",
            "opportunity:read",
            lambda clients, identity: clients.opportunity.list_opportunities(
                identity,
                opportunity_service_pb2.ListOpportunitiesRequest(
                    customer_id=customer_id, open_only=True, page=paging_pb2.PageRequest(page_size=OPEN_ITEMS)
                ),
            ),
            lambda reply: [OpportunityOut.from_proto(o) for o in reply.opportunities],
        ),
        _Part(
            "tickets",
            "ticket:read",
            lambda clients, identity: clients.ticket.list_tickets(
                identity,
                ticket_service_pb2.ListTicketsRequest(
                    customer_id=customer_id, open_only=True, page=paging_pb2.PageRequest(page_size=OPEN_ITEMS)
                ),
            ),
            lambda reply: [TicketOut.from_proto(t) for t in reply.tickets],
        ),
    ]


async def _fetch(clients: Clients, identity: Identity, part: _Part, deadline: float) -> Sequence[Any] | MissingPart:
    """One part's items, or why it is missing; never raises (one part's failure must not sink the others)."""
    if not identity.has(part.permission):
        # The gateway decides access: a role without the part's permission is not even asked for it.
        return MissingPart(part.name, "forbidden")
    reason: Reason
    try:
        async with asyncio.timeout(deadline):
            reply = await part.call(clients, identity)
        return part.items(reply)
    except TimeoutError:
        reason = "timeout"
    except CallFailed as exc:
        reason = _REASONS.get(exc.code, "error")
    except Exception:  # captured per part: one part's fault must not sink the whole answer
        log.exception("customer 360 part failed", extra={"part": part.name})
        return MissingPart(part.name, "error")
    log.warning("customer 360 part missing", extra={"part": part.name, "reason": reason})
    return MissingPart(part.name, reason)


@get("/api/v1/customers/{customer_id:str}/360", opt={"permission": "customer:read"})
async def get_customer_360(request: Request[Any, Any, Any], customer_id: _CUSTOMER_ID) -> Customer360Out:
    """The customer's profile with their 10 most recent interactions, open opportunities and open tickets.

    The profile decides the answer: outside the caller's scope it is 404, exactly like ``GET /customers/{id}``.
    Each other part is fetched concurrently under its own short deadline and needs its own permission
    (``interaction:read``, ``opportunity:read``, ``ticket:read``); a part whose service is down, times out or
    refuses is ``null`` and listed in ``missing`` with ``service_unavailable``, ``timeout`` or ``forbidden``
    (``not_found`` when that service has not yet learnt of the customer, ``error`` for anything else), and the
    answer is still 200.

    Open tasks are not part of the answer: the interaction service does not hold tasks yet, and they will join
    here as another part when it does.
    """
    clients: Clients = request.app.state.clients
    identity: Identity = request.scope["state"]["identity"]
    profile = await clients.customer.get_customer(
        identity, customer_service_pb2.GetCustomerRequest(customer_id=customer_id)
    )
    deadline = min(PART_DEADLINE_SECONDS, request.app.state.settings.call_timeout)
    parts = _parts(customer_id)
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(_fetch(clients, identity, part, deadline)) for part in parts]
    found: dict[str, list[Any] | None] = {}
    missing: list[MissingPart] = []
    for part, task in zip(parts, tasks, strict=True):
        result = task.result()
        if isinstance(result, MissingPart):
            found[part.name] = None
            missing.append(result)
        else:
            found[part.name] = list(result)
    return Customer360Out(
        customer=CustomerOut.from_proto(profile.customer),
        interactions=found["interactions"],
        opportunities=found["opportunities"],
        tickets=found["tickets"],
        missing=missing,
    )
