"""Opportunity rules: what a valid new opportunity is and who may see one. No gRPC, SQL or NATS here."""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass
from decimal import Decimal

from crm_platform.auth_context import Identity
from crm_platform.errors import PermissionDenied
from crm_platform.ids import new_id
from crm_platform.validation import Violations, collect

# Plain digits with at most two decimals: no sign, exponent, NaN or thousands separators, so the string a
# front end sends is exactly the amount stored.
_AMOUNT = re.compile(r"^(?P<units>\d+)(?:\.\d{1,2})?$")
# Fifteen integer digits (up to 999 trillion) keep the amount in hundredths inside a signed 64-bit column.
MAX_AMOUNT_DIGITS = 15
_CURRENCY = re.compile(r"^[A-Z]{3}$")
CENT = Decimal("0.01")


class Stage(enum.StrEnum):
    """Where an opportunity stands in the pipeline (初步接触 → 需求分析 → 方案提供 → 谈判签约 → won / lost)."""

    INITIAL_CONTACT = "initial_contact"
    NEEDS_ANALYSIS = "needs_analysis"
    PROPOSAL = "proposal"
    NEGOTIATION = "negotiation"
    WON = "won"
    LOST = "lost"


# Stages that end the pipeline; every other stage is an open opportunity.
CLOSED_STAGES: frozenset[str] = frozenset({Stage.WON.value, Stage.LOST.value})


@dataclass(frozen=True)
class Opportunity:
    """A sales opportunity with a customer, worked by its owner."""

    id: str
    customer_id: str
    name: str
    stage: Stage
    expected_amount: Decimal
    currency: str
    owner_id: str
    created_at: dt.datetime
    updated_at: dt.datetime


def _expected_amount(violations: Violations, amount: str, currency: str) -> Decimal:
    """Check the money fields; return the amount (zero when invalid, and then a violation is recorded)."""
    value = Decimal(0)
    text = amount.strip()
    match = _AMOUNT.match(text)
    if not text:
        violations.add("expected_amount.amount", "is required")
    elif match is None:
        violations.add("expected_amount.amount", "must be a decimal number with at most 2 decimals, e.g. 500000.00")
    elif len(match["units"].lstrip("0")) > MAX_AMOUNT_DIGITS:
        violations.add("expected_amount.amount", f"must have at most {MAX_AMOUNT_DIGITS} digits before the point")
    elif (value := Decimal(text)) <= 0:
        violations.add("expected_amount.amount", "must be greater than zero")
    if not _CURRENCY.match(currency):
        violations.add("expected_amount.currency", "must be a 3-letter ISO 4217 code in upper case, e.g. CNY")
    return value.quantize(CENT)


def open_opportunity(
    identity: Identity, customer_id: str, name: str, amount: str, currency: str, now: dt.datetime
) -> Opportunity:
    """Validate a new opportunity; the caller owns it and it starts at initial contact."""
    if not identity.has("opportunity:write"):
        raise PermissionDenied("caller may not open opportunities")
    with collect() as violations:
        if not customer_id:
            violations.add("customer_id", "is required")
        clean_name = violations.require_text("name", name, max_length=200)
        expected = _expected_amount(violations, amount, currency)
    return Opportunity(
        id=new_id(),
        customer_id=customer_id,
        name=clean_name,
        stage=Stage.INITIAL_CONTACT,
        expected_amount=expected,
        currency=currency,
        owner_id=identity.user_id,
        created_at=now,
        updated_at=now,
    )


def ensure_may_read(identity: Identity) -> None:
    """Raise :class:`PermissionDenied` unless the caller may read opportunities (scope is applied in the store)."""
    if not identity.has("opportunity:read"):
        raise PermissionDenied("caller may not read opportunities")
