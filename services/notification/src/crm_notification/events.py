"""What the notification service publishes (its consumers are in ``subscriptions``)."""

from __future__ import annotations

from crm.notification.v1 import events_pb2
from crm_notification.domain import InboxMessage

INBOX_CREATED = "crm.notification.inbox.created"


def inbox_message_created(message: InboxMessage) -> events_pb2.InboxMessageCreated:
    """The ``inbox.created`` payload (no text: a pop-up fetches it through the inbox, with the user's rights)."""
    return events_pb2.InboxMessageCreated(message_id=message.id, user_id=message.user_id, kind=message.kind)
