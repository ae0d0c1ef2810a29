"""Customer validation tables: every field kind, both customer kinds, cross-field rules, change tracking."""

from __future__ import annotations

import datetime as dt

import pytest

from crm_customer.domain import changes, masked, register_customer, revise_profile, validate_profile
from crm_platform.auth_context import Scope
from crm_platform.errors import InvalidArgument, PermissionDenied
from crm_testing.services import identity

TODAY = dt.date(2026, 11, 23)
NOW = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
SMALLEST = {
    "name": "李明",
    "id_type": "resident_id",
    "id_number": "110105199001011232",
    "mobile": "13800138000",
    "gender": "male",
    "birth_date": "1990-01-01",
}
CORPORATE = {"name": "北京某某科技有限公司", "credit_code": "91350100M000100Y43", "industry": "software"}


def fields_of(kind: str, raw: dict[str, object]) -> set[str]:
    with pytest.raises(InvalidArgument) as err:
        validate_profile(kind, raw, TODAY)
    return {v.field for v in err.value.violations}


def test_smallest_individual_is_valid_and_normalised() -> None:
    profile = validate_profile("individual", {**SMALLEST, "mobile": "+86 138-0013-8000"}, TODAY)
    assert profile.mobile == "13800138000" and profile.birth_date == dt.date(1990, 1, 1)
    assert profile.tier == "none" and profile.id_number == "110105199001011232"


def test_birth_date_comes_from_the_resident_id_when_missing() -> None:
    raw = {k: v for k, v in SMALLEST.items() if k != "birth_date"}
    assert validate_profile("individual", raw, TODAY).birth_date == dt.date(1990, 1, 1)


@pytest.mark.parametrize(
    ("change", "bad"),
    [
        ({"name": "  "}, {"name"}),
        ({"name": "x" * 101}, {"name"}),
        ({"gender": "other"}, {"gender"}),
        ({"birth_date": "1990-13-01"}, {"birth_date"}),
        ({"birth_date": "2030-01-01", "id_number": "", "id_type": ""}, {"birth_date"}),
        ({"birth_date": "1991-01-01"}, {"id_number"}),  # inconsistent with the ID number
        ({"id_number": "110105199001011231"}, {"id_number"}),  # check digit
        ({"id_type": "driving_licence"}, {"id_type"}),
        ({"id_type": ""}, {"id_type"}),
        ({"id_number": ""}, {"id_number"}),
        ({"id_type": "passport", "id_number": "E1"}, {"id_number"}),
        ({"mobile": "12800138000"}, {"mobile"}),
        ({"mobile": "1380013800"}, {"mobile"}),
        ({"email": "not-an-email"}, {"email"}),
        ({"tier": "silver"}, {"tier"}),
        ({"source_channel": "pigeon"}, {"source_channel"}),
        ({"risk_appetite": "reckless", "risk_assessed_on": "2026-01-01"}, {"risk_appetite"}),
        ({"risk_appetite": "balanced"}, {"risk_assessed_on"}),
        ({"risk_assessed_on": "2026-01-01"}, {"risk_appetite"}),
        ({"risk_appetite": "balanced", "risk_assessed_on": "2027-01-01"}, {"risk_assessed_on"}),
        (
            {"risk_appetite": "balanced", "risk_assessed_on": "2026-01-01", "risk_expires_on": "2025-12-31"},
            {"risk_expires_on"},
        ),
        ({"annual_income": "abc"}, {"annual_income"}),
        ({"annual_income": "-1"}, {"annual_income"}),
        ({"annual_income": "1.234"}, {"annual_income"}),
        ({"annual_income": "100", "annual_income_currency": "XXX"}, {"annual_income.currency"}),
        ({"credit_code": "91350100M000100Y43"}, {"credit_code"}),  # corporate only
        ({"interests": ["x" * 51]}, {"interests"}),
        ({"mobile": "123", "email": "x", "gender": "?"}, {"mobile", "email", "gender"}),  # every field at once
    ],
)
def test_invalid_individual_fields(change: dict[str, object], bad: set[str]) -> None:
    assert fields_of("individual", {**SMALLEST, **change}) == bad


def test_risk_assessment_expiry_defaults_to_one_year() -> None:
    raw = {**SMALLEST, "risk_appetite": "balanced", "risk_assessed_on": "2024-02-29"}
    profile = validate_profile("individual", raw, TODAY)
    assert profile.risk_assessed_on == dt.date(2024, 2, 29) and profile.risk_expires_on == dt.date(2025, 2, 28)


def test_annual_income_is_exact() -> None:
    profile = validate_profile("individual", {**SMALLEST, "annual_income": "500000"}, TODAY)
    assert (profile.annual_income, profile.annual_income_currency) == ("500000.00", "CNY")


def test_corporate_rules() -> None:
    profile = validate_profile("corporate", {**CORPORATE, "credit_code": "91350100m000100y43"}, TODAY)
    assert profile.credit_code == "91350100M000100Y43"
    assert fields_of("corporate", {"name": "某公司"}) == {"credit_code"}
    assert fields_of("corporate", {**CORPORATE, "credit_code": "91350100M000100Y44"}) == {"credit_code"}
    assert fields_of("corporate", {**CORPORATE, "gender": "male", "birth_date": "1990-01-01"}) == {
        "gender",
        "birth_date",
    }
    assert fields_of("corporate", {**CORPORATE, "contact_mobile": "1"}) == {"contact_mobile"}
    assert fields_of("alien", {"name": "x"}) == {"kind"}


def test_register_owner_and_permissions() -> None:
    rm = identity("rm1")
    customer = register_customer(rm, "individual", SMALLEST, NOW)
    assert customer.owner_id == "rm1" and customer.team_id == "T1" and customer.branch_id == "BJ001"
    lobby = identity("lobby", roles=("lobby_manager",), scope=Scope.BRANCH, permissions=("customer:create",))
    pooled = register_customer(lobby, "individual", SMALLEST, NOW)
    assert pooled.owner_id == "" and pooled.team_id == "" and pooled.branch_id == "BJ001"
    with pytest.raises(PermissionDenied):
        register_customer(identity("exec", permissions=("customer:read",)), "individual", SMALLEST, NOW)
    with pytest.raises(InvalidArgument) as err:
        register_customer(identity("x", branch_id=""), "individual", {**SMALLEST, "mobile": "1"}, NOW)
    assert {v.field for v in err.value.violations} == {"mobile", "branch_id"}


def test_revision_validates_the_merged_file_and_masks_changes() -> None:
    customer = register_customer(identity("rm1"), "individual", SMALLEST, NOW)
    profile, diff = revise_profile(customer, {"mobile": "13900139000", "tier": "gold"}, TODAY)
    assert profile.mobile == "13900139000"
    assert [(c.field, c.before, c.after) for c in diff] == [
        ("mobile", "138****8000", "139****9000"),
        ("tier", "none", "gold"),
    ]
    # A new resident ID brings its own birth date; the old one is not kept against it.
    profile, diff = revise_profile(customer, {"id_number": "11010519491231002X"}, TODAY)
    assert profile.birth_date == dt.date(1949, 12, 31)
    assert {c.field for c in diff} == {"id_number", "birth_date"}
    by_field = {c.field: c for c in diff}
    assert (by_field["id_number"].before, by_field["id_number"].after) == ("110105********1232", "110105********002X")
    with pytest.raises(InvalidArgument) as err:
        revise_profile(customer, {"birth_date": "1980-01-01"}, TODAY)
    assert {v.field for v in err.value.violations} == {"id_number"}
    with pytest.raises(InvalidArgument):
        revise_profile(customer, {"owner_id": "rm2"}, TODAY)
    assert changes(customer.profile, customer.profile) == []


def test_masks() -> None:
    raw = {**SMALLEST, "email": "liming@example.com", "address": "北京市朝阳区建国路88号"}
    shown = masked(validate_profile("individual", raw, TODAY))
    assert shown.id_number == "110105********1232" and shown.mobile == "138****8000"
    assert shown.email == "l***@example.com" and shown.address == "北京市朝阳区****"


def test_retag() -> None:
    import dataclasses

    from crm_customer.domain import retag

    customer = dataclasses.replace(register_customer(identity("rm1"), "individual", SMALLEST, NOW), tags=("高净值",))
    assert retag(customer, [" 潜力客户 ", "高净值"], []) == (("潜力客户", "高净值"), ["潜力客户"], [])
    assert retag(customer, [], ["高净值", "不存在"]) == ((), [], ["高净值"])
    for add, remove in (([], []), (["a,b"], []), ([""], []), (["x" * 21], []), ([f"t{i}" for i in range(30)], [])):
        with pytest.raises(InvalidArgument):
            retag(customer, add, remove)


def test_holdings_validation_signals_and_flags() -> None:
    from decimal import Decimal

    from crm_customer.domain import assess_holdings, is_familiar, is_value_first, validate_holdings

    today = dt.date(2026, 11, 23)
    raw = [
        {"product_code": "D1", "product_type": "deposit", "amount": "300000"},
        {"product_code": "W1", "product_type": "wealth", "amount": "400000.50", "maturity_date": "2027-01-10"},
        {"product_code": "L1", "product_type": "loan", "amount": "900000"},
    ]
    holdings = validate_holdings(raw)
    change = assess_holdings(Decimal(0), holdings, "none", today)
    assert change.aum_after == Decimal("700000.50")  # the loan is not an asset
    assert change.signals == ("large_inflow", "maturity_window", "tier_threshold_reached")
    assert change.maturing == ("W1",) and change.eligible_tier == "gold"
    # Already gold: no threshold signal; a fall of 500,000 or more is a large outflow.
    assert assess_holdings(Decimal(700000), holdings, "gold", today).signals == ("maturity_window",)
    assert assess_holdings(Decimal(1300000), holdings[:1], "gold", today).signals == ("large_outflow",)
    # A maturity more than 90 days away (or ago) is outside the window.
    far = validate_holdings(
        [{"product_code": "T", "product_type": "time_deposit", "amount": "1", "maturity_date": "2027-06-01"}]
    )
    assert assess_holdings(Decimal(1), far, "none", today).signals == ()

    with pytest.raises(InvalidArgument) as err:
        validate_holdings(
            [
                {"product_code": "A", "product_type": "gold_bar", "amount": "-1", "currency": "USD"},
                {"product_code": "A", "product_type": "fund", "amount": "1", "start_date": "2026-02-30"},
                {
                    "product_code": "B",
                    "product_type": "fund",
                    "amount": "1",
                    "start_date": "2026-05-01",
                    "maturity_date": "2026-01-01",
                },
            ]
        )
    assert {v.field for v in err.value.violations} == {
        "holdings[0].product_type",
        "holdings[0].amount",
        "holdings[0].amount.currency",
        "holdings[1].product_code",
        "holdings[1].start_date",
        "holdings[2].maturity_date",
    }
    assert is_familiar(3, Decimal(0)) and is_familiar(0, Decimal("1000000.01")) and not is_familiar(2, Decimal(1000000))
    assert is_value_first("platinum", Decimal(0)) and is_value_first("none", Decimal(2000000))
    assert not is_value_first("gold", Decimal(1999999))


def test_one_line_fields_refuse_a_line_break_and_free_text_keeps_it() -> None:
    """Names, addresses, codes, tags and interests are one line (a line break in them forges report rows and
    breaks every list they appear in); the free-text fields may hold line breaks and tabs."""
    from crm_customer.domain.customer import Customer, validate_profile
    from crm_customer.domain.holdings import validate_holdings
    from crm_customer.domain.tags import retag
    from crm_platform.errors import InvalidArgument

    today = dt.date(2026, 12, 7)
    with pytest.raises(InvalidArgument) as err:
        validate_profile(
            "individual",
            {"name": "李明", "address": "北京市\n朝阳区", "occupation": "工程\r师", "interests": ["理财", "旅\n游"]},
            today,
        )
    assert {v.field for v in err.value.violations} == {"address", "occupation", "interests[1]"}
    assert "U+000A" in next(v.description for v in err.value.violations if v.field == "address")
    kept = validate_profile("individual", {"name": "李明", "family_situation": "已婚\n\t育有一子"}, today)
    assert kept.family_situation == "已婚\n\t育有一子"
    corporate = validate_profile("corporate", {**CORPORATE, "main_business": "软件\n咨询"}, today)
    assert corporate.main_business == "软件\n咨询"

    with pytest.raises(InvalidArgument) as err:
        validate_holdings(
            [
                {"product_code": "F\n1", "product_name": "基金", "product_type": "fund", "amount": "1"},
                {"product_code": "F2", "product_name": "基金\t二号", "product_type": "fund", "amount": "1"},
            ]
        )
    assert {v.field for v in err.value.violations} == {"holdings[0].product_code", "holdings[1].product_name"}

    customer = Customer(
        "c1",
        "",
        "individual",
        validate_profile("individual", {"name": "李明"}, today),
        "",
        "",
        "BJ001",
        "north",
        1,
        "u-rm1",
        NOW,
        NOW,
    )
    with pytest.raises(InvalidArgument) as err:
        retag(customer, ["vip", "高\n净值"], [])
    assert [v.field for v in err.value.violations] == ["add[1]"]
