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
CUSTOMER_MERGED = "customer_merged"


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
    return _message(
        owner_id, CUSTOMER_ASSIGNED, "New customer assigned to you", f"Customer {customer_id} is now in your care.", now
    )


def _message(user_id: str, kind: str, title: str, body: str, now: dt.datetime) -> InboxMessage:
    return InboxMessage(id=new_id(), user_id=user_id, kind=kind, title=title, body=body, created_at=now)


def customer_reassigned(
    customer_id: str, owner_id: str, previous_owner_id: str, actor: str, now: dt.datetime
) -> InboxMessage | None:
    """Tell the new owner of a reassigned customer, unless they took it themselves or nothing changed hands."""
    if owner_id in (previous_owner_id, actor):
        return None
    return customer_assigned(customer_id, owner_id, now)


def customer_merged(
    survivor_id: str, duplicate_id: str, survivor_owner_id: str, duplicate_owner_id: str, actor: str, now: dt.datetime
) -> list[InboxMessage]:
    """Tell the owners of two merged files what happened, except whoever merged them: the duplicate's owner that
    the file left their list and where its records went, the survivor's owner that records joined their customer.
    By ids only, as every inbox text."""
    messages: list[InboxMessage] = []
    keeper = f"in the care of {survivor_owner_id}" if survivor_owner_id else "in the branch pool"
    moved = f"Its contact logs, tasks, opportunities and tickets now show under {survivor_id}."
    if duplicate_owner_id and duplicate_owner_id != actor:
        where = "" if duplicate_owner_id == survivor_owner_id else f", {keeper}"
        body = f"Customer {duplicate_id} was a duplicate and was merged into customer {survivor_id} by {actor}{where}."
        messages.append(
            _message(duplicate_owner_id, CUSTOMER_MERGED, "Duplicate customer file merged", f"{body} {moved}", now)
        )
    if survivor_owner_id and survivor_owner_id not in (actor, duplicate_owner_id):
        body = f"Customer {duplicate_id} was merged into your customer {survivor_id} by {actor}."
        messages.append(
            _message(
                survivor_owner_id, CUSTOMER_MERGED, "Duplicate file merged into your customer", f"{body} {moved}", now
            )
        )
    return messages


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
