"""Bodies of the ticket routes."""

from __future__ import annotations

import msgspec

from crm.ticket.v1 import ticket_pb2
from crm_gateway.schemas.common import rfc3339

KIND_FROM_PROTO = {
    ticket_pb2.TICKET_KIND_COMPLAINT: "complaint",
    ticket_pb2.TICKET_KIND_ENQUIRY: "enquiry",
    ticket_pb2.TICKET_KIND_SERVICE_REQUEST: "service_request",
}
URGENCY_FROM_PROTO = {
    ticket_pb2.URGENCY_LOW: "low",
    ticket_pb2.URGENCY_NORMAL: "normal",
    ticket_pb2.URGENCY_HIGH: "high",
}
STATUS_FROM_PROTO = {
    ticket_pb2.TICKET_STATUS_OPEN: "open",
    ticket_pb2.TICKET_STATUS_RESOLVED: "resolved",
    ticket_pb2.TICKET_STATUS_CLOSED: "closed",
}


class TicketOut(msgspec.Struct):
    """A customer's complaint, enquiry or service request.

    The ticket service records no ``updated_at`` yet (no call changes a ticket after it opens), so none is shown.
    """

    id: str
    customer_id: str
    kind: str
    urgency: str
    status: str
    description: str
    sla_deadline: str
    created_at: str

    @classmethod
    def from_proto(cls, t: ticket_pb2.Ticket) -> TicketOut:
        """Map the service's message to the HTTP shape."""
        return cls(
            id=t.id,
            customer_id=t.customer_id,
            kind=KIND_FROM_PROTO.get(t.kind, "unspecified"),
            urgency=URGENCY_FROM_PROTO.get(t.urgency, "unspecified"),
            status=STATUS_FROM_PROTO.get(t.status, "unspecified"),
            description=t.description,
            sla_deadline=rfc3339(t.sla_deadline),
            created_at=rfc3339(t.created_at),
        )
