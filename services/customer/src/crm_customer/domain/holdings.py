"""Holdings from core banking, the AUM, the signals a new snapshot raises, and the flags that guide assignment."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Mapping
from dataclasses import dataclass

from crm_platform import identifiers as ids
from crm_platform.validation import collect

PRODUCT_TYPES = ("deposit", "time_deposit", "wealth", "fund", "insurance", "loan", "external", "other")
MAX_HOLDINGS = 500
# A movement of AUM at least this large is a risk or opportunity alert (大额流入/流出).
LARGE_MOVEMENT = decimal.Decimal("500000")
# Product maturity events look from 90 days back to 90 days ahead (domain.md, detected contact events).
MATURITY_WINDOW = dt.timedelta(days=90)
# AUM thresholds of the VIP tiers, highest first (bank defaults; signing itself belongs to opportunity).
TIER_THRESHOLDS = (
    ("diamond", decimal.Decimal("6000000")),
    ("platinum", decimal.Decimal("2000000")),
    ("gold", decimal.Decimal("500000")),
)
FAMILIAR_PRODUCTS = 3
FAMILIAR_AUM = decimal.Decimal("1000000")
_TIER_RANK = {"none": 0, "gold": 1, "platinum": 2, "diamond": 3}


@dataclass(frozen=True)
class Holding:
    """One product a customer holds."""

    product_code: str
    product_name: str
    product_type: str
    amount: decimal.Decimal
    currency: str
    start_date: dt.date | None
    maturity_date: dt.date | None


@dataclass(frozen=True)
class HoldingsChange:
    """What a new holdings snapshot means: the new AUM and the signals it raises."""

    aum_before: decimal.Decimal
    aum_after: decimal.Decimal
    signals: tuple[str, ...]
    maturing: tuple[str, ...]
    eligible_tier: str
    # Per product type, the total held (what the interaction and reporting services need for contact alerts and
    # product coverage, without the holdings themselves), and every product with a maturity date.
    balances: tuple[tuple[str, decimal.Decimal], ...] = ()
    maturities: tuple[Holding, ...] = ()


def validate_holdings(raw: list[Mapping[str, object]]) -> list[Holding]:
    """Check a holdings snapshot; every problem is named ``holdings[i].field``."""
    out: list[Holding] = []
    with collect() as v:
        if len(raw) > MAX_HOLDINGS:
            v.add("holdings", f"at most {MAX_HOLDINGS} products")
        seen: set[str] = set()
        for i, item in enumerate(raw):
            at = f"holdings[{i}]"
            code = str(item.get("product_code") or "").strip()
            if not code or len(code) > 40:
                v.add(f"{at}.product_code", "is required, at most 40 characters")
            elif code in seen:
                v.add(f"{at}.product_code", "appears twice")
            else:
                v.check_text(f"{at}.product_code", code)
            seen.add(code)
            name = str(item.get("product_name") or "").strip()
            if len(name) > 100:
                v.add(f"{at}.product_name", "must be at most 100 characters")
            else:
                v.check_text(f"{at}.product_name", name)
            kind = str(item.get("product_type") or "")
            if kind not in PRODUCT_TYPES:
                v.add(f"{at}.product_type", f"must be one of {', '.join(PRODUCT_TYPES)}")
            amount_raw = str(item.get("amount") or "")
            try:
                amount = decimal.Decimal(amount_raw)
                if not amount.is_finite() or amount < 0 or amount.as_tuple().exponent < -2:  # type: ignore[operator]
                    raise decimal.InvalidOperation
            except decimal.InvalidOperation:
                v.add(f"{at}.amount", "must be a non-negative amount with at most 2 decimals")
                amount = decimal.Decimal(0)
            currency = str(item.get("currency") or "CNY").upper()
            if currency != "CNY":
                v.add(f"{at}.amount.currency", "must be CNY (AUM is kept in CNY)")
            dates: dict[str, dt.date | None] = {}
            for field in ("start_date", "maturity_date"):
                text = str(item.get(field) or "")
                dates[field] = ids.parse_date(text) if text else None
                if text and dates[field] is None:
                    v.add(f"{at}.{field}", "must be a date YYYY-MM-DD")
            start, maturity = dates["start_date"], dates["maturity_date"]
            if start and maturity and maturity < start:
                v.add(f"{at}.maturity_date", "must not be before start_date")
            out.append(Holding(code, name, kind, amount, currency, start, maturity))
    return out


def aum_of(holdings: list[Holding]) -> decimal.Decimal:
    """Assets under management: everything held except loans."""
    return sum((h.amount for h in holdings if h.product_type != "loan"), decimal.Decimal(0))


def eligible_tier(aum: decimal.Decimal) -> str:
    """The highest VIP tier whose AUM threshold ``aum`` reaches."""
    return next((tier for tier, threshold in TIER_THRESHOLDS if aum >= threshold), "none")


def assess_holdings(
    before_aum: decimal.Decimal, holdings: list[Holding], current_tier: str, today: dt.date
) -> HoldingsChange:
    """The signals of a new snapshot: large movements, maturities in the window, a VIP threshold reached."""
    after = aum_of(holdings)
    signals = []
    if after - before_aum >= LARGE_MOVEMENT:
        signals.append("large_inflow")
    if before_aum - after >= LARGE_MOVEMENT:
        signals.append("large_outflow")
    maturing = tuple(
        sorted(
            h.product_code
            for h in holdings
            if h.maturity_date is not None and abs(h.maturity_date - today) <= MATURITY_WINDOW
        )
    )
    if maturing:
        signals.append("maturity_window")
    tier = eligible_tier(after)
    if _TIER_RANK[tier] > _TIER_RANK.get(current_tier, 0) and _TIER_RANK[tier] > _TIER_RANK[eligible_tier(before_aum)]:
        signals.append("tier_threshold_reached")
    return HoldingsChange(
        before_aum,
        after,
        tuple(signals),
        maturing,
        tier,
        balances_by_type(holdings),
        tuple(
            sorted(
                (h for h in holdings if h.maturity_date is not None), key=lambda h: (h.maturity_date, h.product_code)
            )
        ),
    )


def _maturity_order(holding: Holding) -> tuple[dt.date, str]:
    assert holding.maturity_date is not None
    return holding.maturity_date, holding.product_code


def balances_by_type(holdings: list[Holding]) -> tuple[tuple[str, decimal.Decimal], ...]:
    """The total held per product type, in product-type order."""
    totals: dict[str, decimal.Decimal] = {}
    for h in holdings:
        totals[h.product_type] = totals.get(h.product_type, decimal.Decimal(0)) + h.amount
    return tuple(sorted(totals.items()))


def is_familiar(product_count: int, aum: decimal.Decimal) -> bool:
    """The holdings part of the familiar-customer (熟户) rule: >= 3 products or AUM above 1,000,000 CNY.

    The rule's other parts (the RM knows the customer; wealth bought >= 3 times; appointments) need
    interaction and transaction data this service does not hold.
    """
    return product_count >= FAMILIAR_PRODUCTS or aum > FAMILIAR_AUM


def is_value_first(tier: str, aum: decimal.Decimal) -> bool:
    """Value-first (价值优先): diamond or platinum customers, or AUM at the platinum threshold."""
    return tier in ("diamond", "platinum") or _TIER_RANK[eligible_tier(aum)] >= _TIER_RANK["platinum"]


MAX_SNAPSHOTS = 1000


def check_snapshot_ids(customer_ids: list[str]) -> None:
    """A batch feed names 1..1000 customers, each once (two snapshots of one customer in a batch: which wins?)."""
    with collect() as v:
        if not customer_ids or len(customer_ids) > MAX_SNAPSHOTS:
            v.add("snapshots", f"holds 1 to {MAX_SNAPSHOTS} customers' snapshots")
            return
        seen: set[str] = set()
        for i, customer_id in enumerate(customer_ids):
            if not customer_id.strip():
                v.add(f"snapshots[{i}].customer_id", "is required")
            elif customer_id in seen:
                v.add(f"snapshots[{i}].customer_id", "appears twice in the batch")
            seen.add(customer_id)
