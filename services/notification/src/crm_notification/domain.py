"""Notification rules: which inbox messages an event makes, and who may read which inbox. No gRPC, SQL or NATS."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from crm_platform.auth_context import Identity
from crm_platform.errors import PermissionDenied
from crm_platform.ids import new_id
from crm_platform.validation import collect

CUSTOMER_ASSIGNED = "customer_assigned"


@dataclass(frozen=True)
class InboxMessage:
    """One in-app notification for a user; ``read_at`` is unset until the user opens it."""

    id: str
    user_id: str
    kind: str
    title: str
    body: str
    created_at: dt.datetime
    read_at: dt.datetime | None = None

    @property
    def read(self) -> bool:
        """Whether the user has opened the message."""
        return self.read_at is not None


@dataclass(frozen=True)
class InboxPage:
    """Which page of whose inbox to list: always the caller's own."""

    user_id: str
    limit: int
    after_id: str
    unread_only: bool


def customer_assigned(customer_id: str, owner_id: str, now: dt.datetime) -> InboxMessage | None:
    """Tell the owning RM or teller that a customer is now theirs; ``None`` for a customer in the branch pool.

    The text names the customer by id only: inboxes are not cleared for personal data.
    """
    if not owner_id:
        return None
    return InboxMessage(
        id=new_id(),
        user_id=owner_id,
        kind=CUSTOMER_ASSIGNED,
        title="New customer assigned to you",
        body=f"Customer {customer_id} is now in your care.",
        created_at=now,
    )


def inbox_page(identity: Identity, limit: int, page_token: str, unread_only: bool) -> InboxPage:
    """Validate a request for a page of the caller's inbox."""
    if not identity.has("notification:read"):
        raise PermissionDenied("caller may not read notifications")
    with collect() as violations:
        # The token is the last message id of the previous page; anything else would silently skip messages.
        if page_token:
            try:
                uuid.UUID(page_token)
            except ValueError:
                violations.add("page.page_token", "is not a token this service issued")
    return InboxPage(user_id=identity.user_id, limit=limit, after_id=page_token, unread_only=unread_only)
