"""What the ticket service publishes and the durable consumers it runs."""

from __future__ import annotations

from crm.ticket.v1 import events_pb2, ticket_pb2
from crm_ticket.domain import Ticket

TICKET_OPENED = "crm.ticket.ticket.opened"

KIND_TO_PROTO = {
    "complaint": ticket_pb2.TICKET_KIND_COMPLAINT,
    "enquiry": ticket_pb2.TICKET_KIND_ENQUIRY,
    "service_request": ticket_pb2.TICKET_KIND_SERVICE_REQUEST,
}

URGENCY_TO_PROTO = {
    "low": ticket_pb2.URGENCY_LOW,
    "normal": ticket_pb2.URGENCY_NORMAL,
    "high": ticket_pb2.URGENCY_HIGH,
}

STATUS_TO_PROTO = {
    "open": ticket_pb2.TICKET_STATUS_OPEN,
    "resolved": ticket_pb2.TICKET_STATUS_RESOLVED,
    "closed": ticket_pb2.TICKET_STATUS_CLOSED,
}


def ticket_opened(ticket: Ticket) -> events_pb2.TicketOpened:
    """The ``ticket.opened`` payload (no description: it is the customer's own words, personal data)."""
    return events_pb2.TicketOpened(
        ticket_id=ticket.id,
        customer_id=ticket.customer_id,
        kind=KIND_TO_PROTO[ticket.kind.value],
        urgency=URGENCY_TO_PROTO[ticket.urgency.value],
    )
