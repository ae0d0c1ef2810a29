"""gRPC ``crm.notification.v1.NotificationService``: protobuf in, domain call, protobuf out. No SQL here."""

from __future__ import annotations

from typing import Any

from crm.common.v1 import paging_pb2
from crm.notification.v1 import notification_pb2, notification_service_pb2, notification_service_pb2_grpc
from crm_notification.domain import InboxMessage, inbox_page
from crm_notification.store import InboxStore
from crm_platform.auth_context import current_identity
from crm_platform.grpc_server import declare_permissions
from crm_platform.paging import page_limit
from crm_platform.protobuf import timestamp


def to_proto(message: InboxMessage) -> notification_pb2.InboxMessage:
    """The wire form of an inbox message."""
    return notification_pb2.InboxMessage(
        id=message.id,
        user_id=message.user_id,
        kind=message.kind,
        title=message.title,
        body=message.body,
        read=message.read,
        created_at=timestamp(message.created_at),
    )


class NotificationServicer(notification_service_pb2_grpc.NotificationServiceServicer):
    """Translates NotificationService calls; errors map to status codes in the shared interceptor."""

    def __init__(self, store: InboxStore) -> None:
        self._store = store

    async def ListInbox(self, request: Any, context: Any) -> notification_service_pb2.ListInboxResponse:  # noqa: N802
        """See the proto."""
        page = inbox_page(current_identity(), page_limit(request.page), request.page.page_token, request.unread_only)
        items, next_token = await self._store.page(page)
        return notification_service_pb2.ListInboxResponse(
            messages=[to_proto(m) for m in items], page=paging_pb2.PageInfo(next_page_token=next_token)
        )


# The permission each method needs: the server refuses callers without it and applies its scope.
declare_permissions(
    notification_service_pb2.DESCRIPTOR.services_by_name["NotificationService"],
    {
        "ListInbox": "notification:read",
    },
)
