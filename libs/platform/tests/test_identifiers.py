"""Tables of valid and invalid identifiers: resident ID (GB 11643), credit code (GB 32100), mobile, e-mail."""

from __future__ import annotations

import datetime as dt

import pytest

from crm_platform import identifiers as ids

TODAY = dt.date(2026, 11, 23)


@pytest.mark.parametrize(
    "value",
    ["11010519491231002X", "110105199001011232", "320311197707060018", "510108200002291239", "650102198511119990"],
)
def test_valid_resident_ids(value: str) -> None:
    assert ids.check_resident_id(value, today=TODAY) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("11010519491231002", "18 characters"),  # 17 characters
        ("110105194912310021", "check character"),  # wrong check digit (X expected)
        ("11010519491231002x", "18 characters"),  # lower-case x is not normalised here
        ("010105194912310027", "18 characters"),  # area code cannot start with 0
        ("11010519490231002X", "birth date"),  # 1949-02-31 does not exist
        ("110105203001010019", "out of range"),  # born in the future
        ("110105189901010010", "out of range"),  # before 1900
        ("1101051949123100AX", "18 characters"),
    ],
)
def test_invalid_resident_ids(value: str, reason: str) -> None:
    problem = ids.check_resident_id(value, today=TODAY)
    assert problem is not None and reason in problem


def test_resident_id_birth_date_must_match() -> None:
    assert ids.check_resident_id("11010519491231002X", dt.date(1949, 12, 31), TODAY) is None
    assert ids.check_resident_id("11010519491231002X", dt.date(1950, 1, 1), TODAY) == "does not match birth_date"
    assert ids.resident_id_birth_date("11010519491231002X") == dt.date(1949, 12, 31)


def test_check_digits_computed() -> None:
    assert ids.resident_id_check_char("11010519491231002") == "X"
    assert ids.resident_id_check_char("11010519900101123") == "2"
    assert ids.credit_code_check_char("91350100M000100Y4") == "3"


def test_resident_check_char_is_the_standards_weighted_sum_for_any_body() -> None:
    import random

    draw = random.Random(11643)
    for _ in range(2000):
        body = "".join(draw.choice("0123456789") for _ in range(17))
        total = sum((2 ** (17 - i) % 11) * int(digit) for i, digit in enumerate(body))  # GB 11643: 2^(18-i) mod 11
        assert ids.resident_id_check_char(body) == "10X98765432"[total % 11], body
    for bad in ("1101051949123100", "110105194912310021", "1101051949123100X", "11010519491231 02"):
        with pytest.raises(ValueError):
            ids.resident_id_check_char(bad)


@pytest.mark.parametrize("value", ["91350100M000100Y43", "91110000MA01XXXX0Q", "12100000400000624D"])
def test_valid_credit_codes(value: str) -> None:
    assert ids.check_credit_code(value) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("91350100M000100Y44", "check character"),
        ("91350100M000100Y4", "18 digits"),
        ("91350100I000100Y43", "18 digits"),  # I is not in the alphabet
        ("91350100O000100Y43", "18 digits"),
        ("91350100Z000100Y43", "18 digits"),
        ("91350100S000100Y43", "18 digits"),
        ("91350100V000100Y43", "18 digits"),
        ("91350100m000100y43", "18 digits"),  # lower case before normalisation
    ],
)
def test_invalid_credit_codes(value: str, reason: str) -> None:
    problem = ids.check_credit_code(value)
    assert problem is not None and reason in problem


def test_credit_code_normalisation() -> None:
    assert ids.check_credit_code(ids.normalise_credit_code(" 91350100m000100y43 ")) is None


@pytest.mark.parametrize(
    "value", ["13800138000", "19912345678", "15000000000", "+86 138-0013-8000", "0086 13800138000"]
)
def test_valid_mobiles(value: str) -> None:
    assert ids.check_mobile(ids.normalise_mobile(value)) is None
    assert ids.normalise_mobile(value).startswith("1")


@pytest.mark.parametrize("value", ["12800138000", "1380013800", "138001380001", "2380013800a", "10000000000", ""])
def test_invalid_mobiles(value: str) -> None:
    assert ids.check_mobile(ids.normalise_mobile(value)) is not None


@pytest.mark.parametrize("value", ["li.ming@example.com", "a+b@mail.bank.cn", "x@EXAMPLE.COM"])
def test_valid_emails(value: str) -> None:
    assert ids.check_email(ids.normalise_email(value)) is None


@pytest.mark.parametrize("value", ["li.ming", "a@b", "@example.com", "a b@example.com", "a@-x.com", "x" * 65 + "@a.cn"])
def test_invalid_emails(value: str) -> None:
    assert ids.check_email(ids.normalise_email(value)) is not None


@pytest.mark.parametrize(
    ("id_type", "value", "ok"),
    [
        ("passport", "E12345678", True),
        ("passport", "EA1234567", True),
        ("passport", "E12", False),
        ("passport", "E1234567#", False),
        ("hk_macau_permit", "H12345678", True),
        ("hk_macau_permit", "M1234567890", True),
        ("hk_macau_permit", "X12345678", False),
        ("taiwan_permit", "12345678", True),
        ("taiwan_permit", "1234567", False),
        ("foreign_permanent_resident", "USA110079020288", True),
        ("other", "AB", False),
        ("driving_licence", "12345678", False),
    ],
)
def test_other_id_types(id_type: str, value: str, ok: bool) -> None:
    assert (ids.check_id_number(id_type, value) is None) is ok


def test_dates() -> None:
    assert ids.parse_date("1990-01-01") == dt.date(1990, 1, 1)
    assert ids.parse_date("1990-02-30") is None and ids.parse_date("19900101") is None
    assert ids.check_birth_date(dt.date(2030, 1, 1), TODAY) == "must not be in the future"
    assert ids.check_birth_date(dt.date(1899, 12, 31), TODAY) is not None
