"""``/api/v1/customers/{id}/tickets``: thin handlers — parse, call the ticket service, map."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get
from litestar.params import Parameter

from crm.common.v1 import paging_pb2
from crm.ticket.v1 import ticket_service_pb2
from crm_gateway.schemas.paging import Cursor, Limit, Page
from crm_gateway.schemas.tickets import TicketOut

_CUSTOMER_ID = Annotated[str, Parameter(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
_OPEN_ONLY = Annotated[bool, Parameter(description="Only tickets whose status is open.")]


@get("/api/v1/customers/{customer_id:str}/tickets", opt={"permission": "ticket:read"})
async def list_customer_tickets(
    request: Request[Any, Any, Any],
    customer_id: _CUSTOMER_ID,
    limit: Limit = 50,
    cursor: Cursor = None,
    open_only: _OPEN_ONLY = False,
) -> Page[TicketOut]:
    """A customer's tickets, newest first (404 when the customer is outside the caller's scope)."""
    reply = await request.app.state.clients.ticket.list_tickets(
        request.scope["state"]["identity"],
        ticket_service_pb2.ListTicketsRequest(
            customer_id=customer_id,
            open_only=open_only,
            page=paging_pb2.PageRequest(page_size=limit, page_token=cursor or ""),
        ),
    )
    items = [TicketOut.from_proto(t) for t in reply.tickets]
    return Page(items=items, next_cursor=reply.page.next_page_token or None)
