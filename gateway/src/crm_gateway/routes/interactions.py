"""``/api/v1/customers/{id}/interactions``: thin handlers — parse, call the interaction service, map."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get
from litestar.params import Parameter

from crm.common.v1 import paging_pb2
from crm.interaction.v1 import interaction_service_pb2
from crm_gateway.schemas.interactions import InteractionOut
from crm_gateway.schemas.paging import Cursor, Limit, Page

_CUSTOMER_ID = Annotated[str, Parameter(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]


@get("/api/v1/customers/{customer_id:str}/interactions", opt={"permission": "interaction:read"})
async def list_customer_interactions(
    request: Request[Any, Any, Any], customer_id: _CUSTOMER_ID, limit: Limit = 50, cursor: Cursor = None
) -> Page[InteractionOut]:
    """A customer's logged contacts, newest first (404 when the customer is outside the caller's scope)."""
    reply = await request.app.state.clients.interaction.list_interactions(
        request.scope["state"]["identity"],
        interaction_service_pb2.ListInteractionsRequest(
            customer_id=customer_id, page=paging_pb2.PageRequest(page_size=limit, page_token=cursor or "")
        ),
    )
    items = [InteractionOut.from_proto(i) for i in reply.interactions]
    return Page(items=items, next_cursor=reply.page.next_page_token or None)
