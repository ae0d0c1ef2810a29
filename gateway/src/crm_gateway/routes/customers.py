"""``/api/v1/customers``: thin handlers — parse, call the customer service, map."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.params import Parameter

from crm.customer.v1 import customer_service_pb2
from crm_gateway.schemas.customers import KIND_TO_PROTO, CustomerCreate, CustomerOut

_ID = Annotated[str, Parameter(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
_IDEMPOTENCY_KEY = Annotated[
    str | None, Parameter(header="Idempotency-Key", required=False, min_length=8, max_length=64)
]


@get("/api/v1/customers/{customer_id:str}", opt={"permission": "customer:read"})
async def get_customer(request: Request[Any, Any, Any], customer_id: _ID) -> Response[CustomerOut]:
    """One customer in the caller's scope (404 outside it)."""
    reply = await request.app.state.services.call(
        "customer",
        "GetCustomer",
        customer_service_pb2.GetCustomerRequest(customer_id=customer_id),
        request.scope["state"]["identity"],
    )
    out = CustomerOut.from_proto(reply.customer)
    return Response(out, headers={"ETag": f'"{out.version}"'})


@post("/api/v1/customers", opt={"permission": "customer:create"})
async def create_customer(
    request: Request[Any, Any, Any], data: CustomerCreate, idempotency_key: _IDEMPOTENCY_KEY = None
) -> Response[CustomerOut]:
    """Create a customer owned by the calling RM or teller (others create into the branch pool)."""
    identity = request.scope["state"]["identity"]
    # Keys are per user, so two users cannot collide on (or probe) each other's keys.
    scoped_key = f"{identity.user_id}:{idempotency_key}"
    request_id = hashlib.sha256(scoped_key.encode()).hexdigest() if idempotency_key else ""
    reply = await request.app.state.services.call(
        "customer",
        "CreateCustomer",
        customer_service_pb2.CreateCustomerRequest(
            kind=KIND_TO_PROTO[data.kind], name=data.name, request_id=request_id
        ),
        identity,
    )
    out = CustomerOut.from_proto(reply.customer)
    return Response(
        out, status_code=201, headers={"ETag": f'"{out.version}"', "Location": f"/api/v1/customers/{out.id}"}
    )
