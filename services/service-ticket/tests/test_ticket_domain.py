"""Ticket rules without gRPC or a database: the validation table, SLA deadlines and permissions."""

from __future__ import annotations

import datetime as dt

import pytest

from crm_platform.errors import InvalidArgument, PermissionDenied
from crm_testing.services import identity
from crm_ticket.domain import TicketStatus, Urgency, ensure_may_read, open_ticket

NOW = dt.datetime(2025, 3, 1, 9, 30, tzinfo=dt.UTC)
RM = identity("rm1")


@pytest.mark.parametrize(
    ("customer_id", "kind", "urgency", "description", "bad_fields"),
    [
        ("c1", "complaint", "high", "Card swallowed by the ATM", set()),
        ("c1", "enquiry", "low", "x" * 4000, set()),
        ("c1", "service_request", "normal", " x ", set()),
        ("", "complaint", "high", "d", {"customer_id"}),
        ("c1", None, "high", "d", {"kind"}),
        ("c1", "praise", "high", "d", {"kind"}),
        ("c1", "complaint", None, "d", {"urgency"}),
        ("c1", "complaint", "urgent", "d", {"urgency"}),
        ("c1", "complaint", "high", "", {"description"}),
        ("c1", "complaint", "high", " \n\t ", {"description"}),
        ("c1", "complaint", "high", "x" * 4001, {"description"}),
        ("", None, None, "", {"customer_id", "kind", "urgency", "description"}),
    ],
)
def test_validation_table(
    customer_id: str, kind: str | None, urgency: str | None, description: str, bad_fields: set[str]
) -> None:
    if not bad_fields:
        ticket = open_ticket(RM, customer_id, kind, urgency, description, NOW)
        assert ticket.status is TicketStatus.OPEN and ticket.description == description.strip()
        return
    with pytest.raises(InvalidArgument) as err:
        open_ticket(RM, customer_id, kind, urgency, description, NOW)
    assert {v.field for v in err.value.violations} == bad_fields


@pytest.mark.parametrize(("urgency", "hours"), [(Urgency.HIGH, 4), (Urgency.NORMAL, 24), (Urgency.LOW, 72)])
def test_sla_deadline_follows_urgency(urgency: Urgency, hours: int) -> None:
    ticket = open_ticket(RM, "c1", "complaint", urgency.value, "d", NOW)
    assert ticket.sla_deadline == NOW + dt.timedelta(hours=hours)
    assert ticket.created_at == NOW and ticket.opened_by == "rm1"


def test_permissions() -> None:
    reader = identity("rm1", permissions=("ticket:read",))
    with pytest.raises(PermissionDenied):
        open_ticket(reader, "c1", "complaint", "high", "d", NOW)
    ensure_may_read(reader)
    with pytest.raises(PermissionDenied):
        ensure_may_read(identity("rm1", permissions=("ticket:write",)))
