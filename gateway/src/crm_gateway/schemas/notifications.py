"""Bodies of the inbox routes."""

from __future__ import annotations

import msgspec

from crm.notification.v1 import notification_pb2
from crm_gateway.schemas.common import rfc3339


class InboxMessageOut(msgspec.Struct):
    """One in-app notification."""

    id: str
    kind: str
    title: str
    body: str
    read: bool
    created_at: str

    @classmethod
    def from_proto(cls, m: notification_pb2.InboxMessage) -> InboxMessageOut:
        """Map the service's message to the HTTP shape."""
        return cls(m.id, m.kind, m.title, m.body, m.read, rfc3339(m.created_at))
