"""gRPC ``crm.ticket.v1.TicketService``: protobuf in, domain call, protobuf out. No SQL here."""

from __future__ import annotations

from typing import Any

from crm.common.v1 import paging_pb2
from crm.ticket.v1 import ticket_pb2, ticket_service_pb2, ticket_service_pb2_grpc
from crm_platform.auth_context import current_identity
from crm_platform.grpc_server import declare_permissions
from crm_platform.idempotency import fingerprint
from crm_platform.outbox import utcnow
from crm_platform.paging import after_id, page_limit
from crm_platform.protobuf import timestamp
from crm_ticket.domain import Ticket, ensure_may_read, open_ticket
from crm_ticket.events import KIND_TO_PROTO, STATUS_TO_PROTO, URGENCY_TO_PROTO
from crm_ticket.store import TicketStore

_PROTO_TO_KIND = {v: k for k, v in KIND_TO_PROTO.items()}
_PROTO_TO_URGENCY = {v: k for k, v in URGENCY_TO_PROTO.items()}


def to_proto(ticket: Ticket) -> ticket_pb2.Ticket:
    """The wire form of a ticket."""
    return ticket_pb2.Ticket(
        id=ticket.id,
        customer_id=ticket.customer_id,
        kind=KIND_TO_PROTO[ticket.kind.value],
        urgency=URGENCY_TO_PROTO[ticket.urgency.value],
        status=STATUS_TO_PROTO[ticket.status.value],
        description=ticket.description,
        sla_deadline=timestamp(ticket.sla_deadline),
        created_at=timestamp(ticket.created_at),
        handler_id=ticket.handler_id,
        opened_by=ticket.opened_by,
    )


class TicketServicer(ticket_service_pb2_grpc.TicketServiceServicer):
    """Translates TicketService calls; errors map to status codes in the shared interceptor."""

    def __init__(self, store: TicketStore) -> None:
        self._store = store

    async def OpenTicket(self, request: Any, context: Any) -> ticket_service_pb2.OpenTicketResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        ticket = open_ticket(
            identity,
            request.customer_id,
            _PROTO_TO_KIND.get(request.kind),
            _PROTO_TO_URGENCY.get(request.urgency),
            request.description,
            utcnow(),
            handler_id=request.handler_id,
        )
        stored = await self._store.open(identity, ticket, request.request_id, fingerprint(request))
        return ticket_service_pb2.OpenTicketResponse(ticket=to_proto(stored))

    async def GetTicket(self, request: Any, context: Any) -> ticket_service_pb2.GetTicketResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        ensure_may_read(identity)
        ticket = await self._store.get(identity, request.ticket_id)
        return ticket_service_pb2.GetTicketResponse(ticket=to_proto(ticket))

    async def ListTickets(self, request: Any, context: Any) -> ticket_service_pb2.ListTicketsResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        ensure_may_read(identity)
        items, next_token = await self._store.list_for_customer(
            identity,
            request.customer_id,
            open_only=request.open_only,
            limit=page_limit(request.page),
            after_id=after_id(request.page),
        )
        return ticket_service_pb2.ListTicketsResponse(
            tickets=[to_proto(t) for t in items], page=paging_pb2.PageInfo(next_page_token=next_token)
        )


# The permission each method needs: the server refuses callers without it and applies its scope.
declare_permissions(
    ticket_service_pb2.DESCRIPTOR.services_by_name["TicketService"],
    {
        "OpenTicket": "ticket:write",
        "GetTicket": "ticket:read",
        "ListTickets": "ticket:read",
    },
)
