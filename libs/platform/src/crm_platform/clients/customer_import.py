"""Typed client of customer imports (``crm.customer.v1.CustomerImportService``, served by the customer process)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from crm.customer.v1 import import_service_pb2 as pb
from crm.customer.v1 import import_service_pb2_grpc
from crm_platform.auth_context import Identity
from crm_platform.clients.base import ServiceClient


class CustomerImportClient(ServiceClient):
    """Customer imports (``crm.customer.v1.CustomerImportService``, served by the customer process).

    Reads are retried on UNAVAILABLE; writes are not.
    """

    service = "customer"
    stub_class = import_service_pb2_grpc.CustomerImportServiceStub

    async def get_import_template(
        self, identity: Identity, request: pb.GetImportTemplateRequest
    ) -> pb.GetImportTemplateResponse:
        """``GetImportTemplate``."""
        return await self._unary("GetImportTemplate", request, identity, idempotent=True)

    async def upload_import(
        self, identity: Identity, requests: AsyncIterator[pb.UploadImportRequest], *, timeout: float
    ) -> pb.UploadImportResponse:
        """``UploadImport`` (client streaming; never retried)."""
        return await self._stream_in("UploadImport", requests, identity, timeout=timeout)

    async def get_import(self, identity: Identity, request: pb.GetImportRequest) -> pb.GetImportResponse:
        """``GetImport``."""
        return await self._unary("GetImport", request, identity, idempotent=True)

    async def list_import_rows(
        self, identity: Identity, request: pb.ListImportRowsRequest
    ) -> pb.ListImportRowsResponse:
        """``ListImportRows``."""
        return await self._unary("ListImportRows", request, identity, idempotent=True)

    async def rollback_import(self, identity: Identity, request: pb.RollbackImportRequest) -> pb.RollbackImportResponse:
        """``RollbackImport``."""
        return await self._unary("RollbackImport", request, identity, idempotent=False)
