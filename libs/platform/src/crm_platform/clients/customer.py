"""Typed client of the customer service (``crm.customer.v1.CustomerService``)."""

from __future__ import annotations

from crm.customer.v1 import customer_service_pb2 as pb
from crm.customer.v1 import customer_service_pb2_grpc
from crm_platform.auth_context import Identity
from crm_platform.clients.base import ServiceClient


class CustomerClient(ServiceClient):
    """The customer service (``crm.customer.v1.CustomerService``).

    Reads are retried on UNAVAILABLE; writes are not.
    """

    service = "customer"
    stub_class = customer_service_pb2_grpc.CustomerServiceStub

    async def get_customer(self, identity: Identity, request: pb.GetCustomerRequest) -> pb.GetCustomerResponse:
        """``GetCustomer``."""
        return await self._unary("GetCustomer", request, identity, idempotent=True)

    async def create_customer(self, identity: Identity, request: pb.CreateCustomerRequest) -> pb.CreateCustomerResponse:
        """``CreateCustomer``."""
        return await self._unary("CreateCustomer", request, identity, idempotent=False)

    async def update_customer(self, identity: Identity, request: pb.UpdateCustomerRequest) -> pb.UpdateCustomerResponse:
        """``UpdateCustomer``."""
        return await self._unary("UpdateCustomer", request, identity, idempotent=False)

    async def list_customers(self, identity: Identity, request: pb.ListCustomersRequest) -> pb.ListCustomersResponse:
        """``ListCustomers``."""
        return await self._unary("ListCustomers", request, identity, idempotent=True)

    async def list_customer_history(
        self, identity: Identity, request: pb.ListCustomerHistoryRequest
    ) -> pb.ListCustomerHistoryResponse:
        """``ListCustomerHistory``."""
        return await self._unary("ListCustomerHistory", request, identity, idempotent=True)

    async def assign_customer(self, identity: Identity, request: pb.AssignCustomerRequest) -> pb.AssignCustomerResponse:
        """``AssignCustomer``."""
        return await self._unary("AssignCustomer", request, identity, idempotent=False)

    async def reclaim_customer(
        self, identity: Identity, request: pb.ReclaimCustomerRequest
    ) -> pb.ReclaimCustomerResponse:
        """``ReclaimCustomer``."""
        return await self._unary("ReclaimCustomer", request, identity, idempotent=False)

    async def erase_customer(self, identity: Identity, request: pb.EraseCustomerRequest) -> pb.EraseCustomerResponse:
        """``EraseCustomer``."""
        return await self._unary("EraseCustomer", request, identity, idempotent=False)

    async def tag_customer(self, identity: Identity, request: pb.TagCustomerRequest) -> pb.TagCustomerResponse:
        """``TagCustomer``."""
        return await self._unary("TagCustomer", request, identity, idempotent=False)

    async def create_segment(self, identity: Identity, request: pb.CreateSegmentRequest) -> pb.CreateSegmentResponse:
        """``CreateSegment``."""
        return await self._unary("CreateSegment", request, identity, idempotent=False)

    async def list_segments(self, identity: Identity, request: pb.ListSegmentsRequest) -> pb.ListSegmentsResponse:
        """``ListSegments``."""
        return await self._unary("ListSegments", request, identity, idempotent=True)

    async def list_segment_members(
        self, identity: Identity, request: pb.ListSegmentMembersRequest
    ) -> pb.ListSegmentMembersResponse:
        """``ListSegmentMembers``."""
        return await self._unary("ListSegmentMembers", request, identity, idempotent=True)

    async def replace_holdings(
        self, identity: Identity, request: pb.ReplaceHoldingsRequest
    ) -> pb.ReplaceHoldingsResponse:
        """``ReplaceHoldings``."""
        return await self._unary("ReplaceHoldings", request, identity, idempotent=False)

    async def list_holdings(self, identity: Identity, request: pb.ListHoldingsRequest) -> pb.ListHoldingsResponse:
        """``ListHoldings``."""
        return await self._unary("ListHoldings", request, identity, idempotent=True)

    async def reveal_customer(self, identity: Identity, request: pb.RevealCustomerRequest) -> pb.RevealCustomerResponse:
        """``RevealCustomer``."""
        return await self._unary("RevealCustomer", request, identity, idempotent=False)

    async def assign_customers(
        self, identity: Identity, request: pb.AssignCustomersRequest
    ) -> pb.AssignCustomersResponse:
        """``AssignCustomers``."""
        return await self._unary("AssignCustomers", request, identity, idempotent=False)

    async def replace_holdings_batch(
        self, identity: Identity, request: pb.ReplaceHoldingsBatchRequest
    ) -> pb.ReplaceHoldingsBatchResponse:
        """``ReplaceHoldingsBatch``."""
        return await self._unary("ReplaceHoldingsBatch", request, identity, idempotent=False)

    async def define_managed_tag(
        self, identity: Identity, request: pb.DefineManagedTagRequest
    ) -> pb.DefineManagedTagResponse:
        """``DefineManagedTag``."""
        return await self._unary("DefineManagedTag", request, identity, idempotent=False)

    async def list_managed_tags(
        self, identity: Identity, request: pb.ListManagedTagsRequest
    ) -> pb.ListManagedTagsResponse:
        """``ListManagedTags``."""
        return await self._unary("ListManagedTags", request, identity, idempotent=True)

    async def merge_customers(self, identity: Identity, request: pb.MergeCustomersRequest) -> pb.MergeCustomersResponse:
        """``MergeCustomers``."""
        return await self._unary("MergeCustomers", request, identity, idempotent=False)

    async def lookup_customers(
        self, identity: Identity, request: pb.LookupCustomersRequest
    ) -> pb.LookupCustomersResponse:
        """``LookupCustomers``."""
        return await self._unary("LookupCustomers", request, identity, idempotent=True)
