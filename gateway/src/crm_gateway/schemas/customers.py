"""Bodies of the customer routes."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from crm.customer.v1 import customer_pb2
from crm_gateway.schemas.common import rfc3339

KIND_FROM_PROTO = {
    customer_pb2.CUSTOMER_KIND_INDIVIDUAL: "individual",
    customer_pb2.CUSTOMER_KIND_CORPORATE: "corporate",
}
KIND_TO_PROTO = {v: k for k, v in KIND_FROM_PROTO.items()}


class CustomerCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new customer's basic facts."""

    kind: Literal["individual", "corporate"]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class CustomerOut(msgspec.Struct):
    """A customer as the caller may see it."""

    id: str
    customer_no: str
    kind: str
    name: str
    owner_id: str | None
    branch_id: str
    team_id: str | None
    version: int
    created_at: str
    updated_at: str

    @classmethod
    def from_proto(cls, c: customer_pb2.Customer) -> CustomerOut:
        """Map the service's message to the HTTP shape."""
        return cls(
            id=c.id,
            customer_no=c.customer_no,
            kind=KIND_FROM_PROTO.get(c.kind, "unspecified"),
            name=c.name,
            owner_id=c.owner_id or None,
            branch_id=c.branch_id,
            team_id=c.team_id or None,
            version=c.version,
            created_at=rfc3339(c.created_at),
            updated_at=rfc3339(c.updated_at),
        )
