"""Typed client of the notification service (``crm.notification.v1.NotificationService``)."""

from __future__ import annotations

from crm.notification.v1 import notification_service_pb2 as pb
from crm.notification.v1 import notification_service_pb2_grpc
from crm_platform.auth_context import Identity
from crm_platform.clients.base import ServiceClient


class NotificationClient(ServiceClient):
    """The notification service (``crm.notification.v1.NotificationService``).

    Reads are retried on UNAVAILABLE; writes are not.
    """

    service = "notification"
    stub_class = notification_service_pb2_grpc.NotificationServiceStub

    async def list_inbox(self, identity: Identity, request: pb.ListInboxRequest) -> pb.ListInboxResponse:
        """``ListInbox``."""
        return await self._unary("ListInbox", request, identity, idempotent=True)
