"""``/api/v1/customers/{id}/reveal`` and ``/erase``: personal data shown in the clear, or destroyed.

Both are audited by the gateway's audit trail with the declared purpose or lawful basis (never the values),
and kept in the customer's own history by the customer service.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, post
from litestar.params import Parameter

from crm.customer.v1 import customer_service_pb2 as pb
from crm_gateway.schemas.customers import CustomerOut

_ID = Annotated[str, Parameter(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
RevealableField = Literal["id_number", "mobile", "email", "address", "contact_mobile"]


class RevealIn(msgspec.Struct, forbid_unknown_fields=True):
    """Which sensitive fields to show, and why (kept in the audit trail and the customer's history)."""

    fields: Annotated[list[RevealableField], msgspec.Meta(min_length=1, max_length=5)]
    purpose: Annotated[str, msgspec.Meta(min_length=5, max_length=200)]


class RevealOut(msgspec.Struct):
    """The requested values in the clear (a field absent here is empty or was erased)."""

    customer_id: str
    values: dict[str, str]


class EraseIn(msgspec.Struct, forbid_unknown_fields=True):
    """The lawful basis of an erasure request (kept in the history and the audit trail)."""

    reason: Annotated[str, msgspec.Meta(min_length=5, max_length=500)]


@post("/api/v1/customers/{customer_id:str}/reveal", opt={"permission": "pii:reveal"}, status_code=200)
async def reveal(request: Request[Any, Any, Any], customer_id: _ID, data: RevealIn) -> RevealOut:
    """Show sensitive fields of a customer in the caller's scope, for a declared purpose."""
    fields = sorted(set(data.fields))
    request.scope["state"]["audit_detail"] = {"fields": fields, "purpose": data.purpose.strip()}
    reply = await request.app.state.clients.customer.reveal_customer(
        request.scope["state"]["identity"],
        pb.RevealCustomerRequest(customer_id=customer_id, fields=fields, purpose=data.purpose.strip()),
    )
    return RevealOut(customer_id=customer_id, values=dict(reply.values))


@post("/api/v1/customers/{customer_id:str}/erase", opt={"permission": "customer:erase"}, status_code=200)
async def erase(request: Request[Any, Any, Any], customer_id: _ID, data: EraseIn) -> CustomerOut:
    """Erase a customer's personal data on a lawful request (crypto-shredding); non-personal facts stay."""
    request.scope["state"]["audit_detail"] = {"reason": data.reason.strip()}
    reply = await request.app.state.clients.customer.erase_customer(
        request.scope["state"]["identity"], pb.EraseCustomerRequest(customer_id=customer_id, reason=data.reason.strip())
    )
    return CustomerOut.from_proto(reply.customer)
