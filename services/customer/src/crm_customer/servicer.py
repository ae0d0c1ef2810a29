"""gRPC ``crm.customer.v1.CustomerService``: protobuf in, domain call, protobuf out. No SQL here."""

from __future__ import annotations

from typing import Any

from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc
from crm_customer.domain import Customer, register_customer
from crm_customer.events import KIND_TO_PROTO
from crm_customer.store import CustomerStore
from crm_platform.auth_context import current_identity
from crm_platform.outbox import utcnow
from crm_platform.protobuf import timestamp

_PROTO_TO_KIND = {v: k for k, v in KIND_TO_PROTO.items()}


def to_proto(customer: Customer) -> customer_pb2.Customer:
    """The wire form of a customer."""
    return customer_pb2.Customer(
        id=customer.id,
        customer_no=customer.customer_no,
        kind=KIND_TO_PROTO[customer.kind.value],
        name=customer.name,
        owner_id=customer.owner_id,
        branch_id=customer.branch_id,
        team_id=customer.team_id,
        version=customer.version,
        created_at=timestamp(customer.created_at),
        updated_at=timestamp(customer.updated_at),
    )


class CustomerServicer(customer_service_pb2_grpc.CustomerServiceServicer):
    """Translates CustomerService calls; errors map to status codes in the shared interceptor."""

    def __init__(self, store: CustomerStore) -> None:
        self._store = store

    async def GetCustomer(self, request: Any, context: Any) -> customer_service_pb2.GetCustomerResponse:  # noqa: N802
        """See the proto."""
        customer = await self._store.get(current_identity(), request.customer_id)
        return customer_service_pb2.GetCustomerResponse(customer=to_proto(customer))

    async def CreateCustomer(self, request: Any, context: Any) -> customer_service_pb2.CreateCustomerResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        if request.request_id:
            earlier = await self._store.find_by_request(identity, request.request_id)
            if earlier is not None:
                return customer_service_pb2.CreateCustomerResponse(customer=to_proto(earlier))
        customer = register_customer(identity, _PROTO_TO_KIND.get(request.kind), {"name": request.name}, utcnow())
        created = await self._store.create(customer, request.request_id)
        return customer_service_pb2.CreateCustomerResponse(customer=to_proto(created))
