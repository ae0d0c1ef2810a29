"""Interaction rules: what a valid contact log is. No gRPC, SQL or NATS here."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from crm_platform.auth_context import Identity
from crm_platform.errors import PermissionDenied
from crm_platform.ids import new_id
from crm_platform.validation import collect


class Channel(enum.StrEnum):
    """How the contact happened."""

    PHONE = "phone"
    VISIT = "visit"
    WECHAT = "wechat"
    EMAIL = "email"
    SMS = "sms"
    BRANCH_COUNTER = "branch_counter"


@dataclass(frozen=True)
class Interaction:
    """One logged contact with a customer."""

    id: str
    customer_id: str
    channel: Channel
    summary: str
    occurred_at: dt.datetime
    logged_by: str
    created_at: dt.datetime


def log_contact(
    identity: Identity,
    customer_id: str,
    channel: str | None,
    summary: str,
    occurred_at: dt.datetime | None,
    now: dt.datetime,
) -> Interaction:
    """Validate a contact log; a contact cannot be logged in the future."""
    if not identity.has("interaction:write"):
        raise PermissionDenied("caller may not log interactions")
    with collect() as violations:
        if not customer_id:
            violations.add("customer_id", "is required")
        if channel not in {c.value for c in Channel}:
            violations.add("channel", "must be one of " + ", ".join(c.value for c in Channel))
        clean = violations.require_text("summary", summary, max_length=2000)
        when = occurred_at or now
        if when > now + dt.timedelta(minutes=5):
            violations.add("occurred_at", "must not be in the future")
    assert channel is not None  # checked above: collect() raised otherwise
    return Interaction(new_id(), customer_id, Channel(channel), clean, when, identity.user_id, now)


def require_read(identity: Identity) -> None:
    """Reading contact logs needs ``interaction:read`` (checked here too, not only at the gateway)."""
    if not identity.has("interaction:read"):
        raise PermissionDenied("caller may not read interactions")
