"""Ticket rules: what a valid new ticket is, its SLA deadline, and who may see one. No gRPC, SQL or NATS here."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from crm_platform.auth_context import Identity
from crm_platform.errors import PermissionDenied
from crm_platform.ids import new_id
from crm_platform.validation import collect


class TicketKind(enum.StrEnum):
    """Complaint, enquiry or service request."""

    COMPLAINT = "complaint"
    ENQUIRY = "enquiry"
    SERVICE_REQUEST = "service_request"


class Urgency(enum.StrEnum):
    """How urgent the customer's matter is; it sets the SLA deadline."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class TicketStatus(enum.StrEnum):
    """Where a ticket stands: open until resolved, closed once the customer confirms."""

    OPEN = "open"
    RESOLVED = "resolved"
    CLOSED = "closed"


# Time to resolve by urgency. Routing rules and SLA policies per kind and branch come later and will refine this
# default; until then every kind shares it.
SLA_BY_URGENCY: dict[Urgency, dt.timedelta] = {
    Urgency.HIGH: dt.timedelta(hours=4),
    Urgency.NORMAL: dt.timedelta(hours=24),
    Urgency.LOW: dt.timedelta(hours=72),
}


@dataclass(frozen=True)
class Ticket:
    """A customer's complaint, enquiry or service request."""

    id: str
    customer_id: str
    kind: TicketKind
    urgency: Urgency
    status: TicketStatus
    description: str
    sla_deadline: dt.datetime
    opened_by: str
    created_at: dt.datetime
    handler_id: str = ""


def sla_deadline(urgency: Urgency, opened_at: dt.datetime) -> dt.datetime:
    """When a ticket of ``urgency`` opened at ``opened_at`` must be resolved."""
    return opened_at + SLA_BY_URGENCY[urgency]


def open_ticket(
    identity: Identity,
    customer_id: str,
    kind: str | None,
    urgency: str | None,
    description: str,
    now: dt.datetime,
    handler_id: str = "",
) -> Ticket:
    """Validate a new ticket; it opens now with the deadline its urgency sets."""
    if not identity.has("ticket:write"):
        raise PermissionDenied("caller may not open tickets")
    with collect() as violations:
        if not customer_id:
            violations.add("customer_id", "is required")
        if kind not in {k.value for k in TicketKind}:
            violations.add("kind", "must be one of " + ", ".join(k.value for k in TicketKind))
        if urgency not in {u.value for u in Urgency}:
            violations.add("urgency", "must be one of " + ", ".join(u.value for u in Urgency))
        clean = violations.require_text("description", description, max_length=4000)
        if len(handler_id) > 64:
            violations.add("handler_id", "must be at most 64 characters")
    assert kind is not None and urgency is not None  # collect() has raised unless both are valid
    level = Urgency(urgency)
    return Ticket(
        id=new_id(),
        customer_id=customer_id,
        kind=TicketKind(kind),
        urgency=level,
        status=TicketStatus.OPEN,
        description=clean,
        sla_deadline=sla_deadline(level, now),
        opened_by=identity.user_id,
        created_at=now,
        handler_id=handler_id,
    )


def ensure_may_read(identity: Identity) -> None:
    """Raise :class:`PermissionDenied` unless the caller may read tickets (scope is applied in the store)."""
    if not identity.has("ticket:read"):
        raise PermissionDenied("caller may not read tickets")
