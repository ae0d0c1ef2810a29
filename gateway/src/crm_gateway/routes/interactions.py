"""``/api/v1/customers/{id}/interactions``: thin handlers — parse, call the interaction service, map."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.params import Parameter

from crm.common.v1 import paging_pb2
from crm.interaction.v1 import interaction_service_pb2
from crm_gateway.schemas.idempotency import IdempotencyKey, request_id
from crm_gateway.schemas.interactions import CHANNEL_TO_PROTO, InteractionIn, InteractionOut
from crm_gateway.schemas.paging import Cursor, Limit, Page
from crm_platform.protobuf import timestamp

_CUSTOMER_ID = Annotated[str, Parameter(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]


@post("/api/v1/customers/{customer_id:str}/interactions", opt={"permission": "interaction:write"})
async def log_customer_interaction(
    request: Request[Any, Any, Any],
    customer_id: _CUSTOMER_ID,
    data: InteractionIn,
    idempotency_key: IdempotencyKey = None,
) -> Response[InteractionOut]:
    """Log a contact with a customer in the caller's scope; the customer may have been created a moment ago (the
    interaction service asks the customer service about a customer it does not know yet)."""
    identity = request.scope["state"]["identity"]
    message = interaction_service_pb2.LogInteractionRequest(
        customer_id=customer_id,
        channel=CHANNEL_TO_PROTO.get(data.channel, 0),
        summary=data.summary,
        request_id=request_id(identity, idempotency_key),
    )
    if data.occurred_at is not None:
        message.occurred_at.CopyFrom(timestamp(data.occurred_at))
    reply = await request.app.state.clients.interaction.log_interaction(identity, message)
    return Response(InteractionOut.from_proto(reply.interaction), status_code=201)


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
