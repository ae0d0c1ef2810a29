"""Opportunity rules without gRPC or a database: the validation table and the permissions."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from crm_opportunity.domain import Stage, ensure_may_read, open_opportunity
from crm_platform.errors import InvalidArgument, PermissionDenied
from crm_testing.services import identity

NOW = dt.datetime(2025, 3, 1, 9, 30, tzinfo=dt.UTC)
RM = identity("rm1")
AMOUNT = "expected_amount.amount"
CURRENCY = "expected_amount.currency"


@pytest.mark.parametrize(
    ("customer_id", "name", "amount", "currency", "bad_fields"),
    [
        ("c1", "Li - 3-year large CD - 500k", "500000.00", "CNY", set()),
        ("c1", "x" * 200, "0.01", "USD", set()),
        ("c1", "n", "999999999999999.99", "CNY", set()),
        ("", "n", "1", "CNY", {"customer_id"}),
        ("c1", "   ", "1", "CNY", {"name"}),
        ("c1", "x" * 201, "1", "CNY", {"name"}),
        ("c1", "n", "", "CNY", {AMOUNT}),
        ("c1", "n", "0", "CNY", {AMOUNT}),
        ("c1", "n", "0.00", "CNY", {AMOUNT}),
        ("c1", "n", "-5", "CNY", {AMOUNT}),
        ("c1", "n", "12.345", "CNY", {AMOUNT}),
        ("c1", "n", "1e5", "CNY", {AMOUNT}),
        ("c1", "n", "NaN", "CNY", {AMOUNT}),
        ("c1", "n", "1,000", "CNY", {AMOUNT}),
        ("c1", "n", "1.", "CNY", {AMOUNT}),
        ("c1", "n", "1000000000000000", "CNY", {AMOUNT}),
        ("c1", "n", "1", "", {CURRENCY}),
        ("c1", "n", "1", "cny", {CURRENCY}),
        ("c1", "n", "1", "CNYX", {CURRENCY}),
        ("", "", "", "", {"customer_id", "name", AMOUNT, CURRENCY}),
    ],
)
def test_validation_table(customer_id: str, name: str, amount: str, currency: str, bad_fields: set[str]) -> None:
    if not bad_fields:
        opportunity = open_opportunity(RM, customer_id, name, amount, currency, NOW)
        assert opportunity.expected_amount == Decimal(amount)
        return
    with pytest.raises(InvalidArgument) as err:
        open_opportunity(RM, customer_id, name, amount, currency, NOW)
    assert {v.field for v in err.value.violations} == bad_fields


def test_new_opportunity_is_owned_by_the_caller_at_initial_contact() -> None:
    opportunity = open_opportunity(RM, "c1", "  Li - CD  ", "500000", "CNY", NOW)
    assert opportunity.owner_id == "rm1"
    assert opportunity.stage is Stage.INITIAL_CONTACT
    assert opportunity.name == "Li - CD"
    assert str(opportunity.expected_amount) == "500000.00"
    assert opportunity.created_at == opportunity.updated_at == NOW


def test_permissions() -> None:
    reader = identity("rm1", permissions=("opportunity:read",))
    with pytest.raises(PermissionDenied):
        open_opportunity(reader, "c1", "n", "1", "CNY", NOW)
    ensure_may_read(reader)
    with pytest.raises(PermissionDenied):
        ensure_may_read(identity("rm1", permissions=("opportunity:write",)))
