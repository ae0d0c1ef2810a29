"""``/api/v1/customers/{id}/opportunities``: thin handlers — parse, call the opportunity service, map."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get
from litestar.params import Parameter

from crm.common.v1 import paging_pb2
from crm.opportunity.v1 import opportunity_service_pb2
from crm_gateway.schemas.opportunities import OpportunityOut
from crm_gateway.schemas.paging import Cursor, Limit, Page

_CUSTOMER_ID = Annotated[str, Parameter(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
_OPEN_ONLY = Annotated[bool, Parameter(description="Only opportunities still in the pipeline (not won or lost).")]


@get("/api/v1/customers/{customer_id:str}/opportunities", opt={"permission": "opportunity:read"})
async def list_customer_opportunities(
    request: Request[Any, Any, Any],
    customer_id: _CUSTOMER_ID,
    limit: Limit = 50,
    cursor: Cursor = None,
    open_only: _OPEN_ONLY = False,
) -> Page[OpportunityOut]:
    """A customer's opportunities, newest first (404 when the customer is outside the caller's scope)."""
    reply = await request.app.state.clients.opportunity.list_opportunities(
        request.scope["state"]["identity"],
        opportunity_service_pb2.ListOpportunitiesRequest(
            customer_id=customer_id,
            open_only=open_only,
            page=paging_pb2.PageRequest(page_size=limit, page_token=cursor or ""),
        ),
    )
    items = [OpportunityOut.from_proto(o) for o in reply.opportunities]
    return Page(items=items, next_cursor=reply.page.next_page_token or None)
