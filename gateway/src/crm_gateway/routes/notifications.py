"""``/api/v1/me/inbox``: the caller's own in-app notifications."""

from __future__ import annotations

from typing import Any

from litestar import Request, get

from crm.common.v1 import paging_pb2
from crm.notification.v1 import notification_service_pb2
from crm_gateway.schemas.notifications import InboxMessageOut
from crm_gateway.schemas.paging import Cursor, Limit, Page


@get("/api/v1/me/inbox", opt={"permission": "notification:read"})
async def list_inbox(
    request: Request[Any, Any, Any], limit: Limit = 50, cursor: Cursor = None, unread_only: bool = False
) -> Page[InboxMessageOut]:
    """The caller's inbox, newest first."""
    reply = await request.app.state.clients.notification.list_inbox(
        request.scope["state"]["identity"],
        notification_service_pb2.ListInboxRequest(
            page=paging_pb2.PageRequest(page_size=limit, page_token=cursor or ""), unread_only=unread_only
        ),
    )
    items = [InboxMessageOut.from_proto(m) for m in reply.messages]
    return Page(items=items, next_cursor=reply.page.next_page_token or None)
