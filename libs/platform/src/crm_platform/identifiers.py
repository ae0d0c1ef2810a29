"""Chinese identifiers and contact details: normalise and check them. Pure functions, shared by the customer
service and the gateway so both apply ONE implementation of each rule.

Each ``check_*`` returns ``None`` when the (already normalised) value is valid, else a one-line reason fit for
a field violation. ``normalise_*`` only removes harmless formatting (spaces, hyphens, case); it never repairs.
"""

from __future__ import annotations

import datetime as dt
import re

# GB 11643-1999: weights of the 17 body digits (2^(18-i) mod 11) and the ISO 7064 MOD 11-2 check characters.
_RESIDENT_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_RESIDENT_CHECK = "10X98765432"
# Per body position, each digit's weighted term: the sum is one C-level pass of look-ups (a third of the time of
# converting and multiplying each digit; every import row and create checks one).
_RESIDENT_TERMS = tuple({str(digit): weight * digit for digit in range(10)} for weight in _RESIDENT_WEIGHTS)
_RESIDENT_SHAPE = re.compile(r"^[1-9]\d{16}[\dX]$")

# GB 32100-2015: 31 characters (no I, O, Z, S, V), weights 3^i mod 31, check = 31 - (sum mod 31).
CREDIT_CODE_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_CREDIT_SHAPE = re.compile(rf"^[{CREDIT_CODE_CHARSET}]{{18}}$")

_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_PASSPORT = re.compile(r"^[A-Z0-9]{5,17}$")
_HK_MACAU_PERMIT = re.compile(r"^[HM]\d{8}(\d{2})?$")
_TAIWAN_PERMIT = re.compile(r"^\d{8}(\d{2})?$")
_OTHER_ID = re.compile(r"^[A-Z0-9]{4,32}$")
_FORMATTING = re.compile(r"[\s\-]")

EARLIEST_BIRTH_DATE = dt.date(1900, 1, 1)

# The ID types a customer file may carry (lower-case snake_case, as the API spells them).
ID_TYPES = ("resident_id", "passport", "hk_macau_permit", "taiwan_permit", "foreign_permanent_resident", "other")


def normalise_id_number(value: str) -> str:
    """Upper-case, without spaces or hyphens (``11010519491231002x`` → ``11010519491231002X``)."""
    return _FORMATTING.sub("", value).upper()


def normalise_mobile(value: str) -> str:
    """Digits only, without a ``+86``/``0086`` country prefix."""
    digits = _FORMATTING.sub("", value)
    for prefix in ("+86", "0086"):
        if digits.startswith(prefix):
            digits = digits[len(prefix) :]
    return digits


def normalise_email(value: str) -> str:
    """Trimmed, with the domain lower-cased (the local part is kept: it may be case-sensitive)."""
    local, at, domain = value.strip().rpartition("@")
    return f"{local}{at}{domain.lower()}" if at else value.strip()


def normalise_credit_code(value: str) -> str:
    """Upper-case, without spaces or hyphens."""
    return _FORMATTING.sub("", value).upper()


def resident_id_check_char(body: str) -> str:
    """The GB 11643 check character of the first 17 digits ``body``."""
    if len(body) != len(_RESIDENT_WEIGHTS):
        raise ValueError(f"a resident ID body has {len(_RESIDENT_WEIGHTS)} digits")
    try:
        total = sum(map(dict.__getitem__, _RESIDENT_TERMS, body))
    except KeyError:
        raise ValueError("a resident ID body is digits only") from None
    return _RESIDENT_CHECK[total % 11]


def resident_id_birth_date(value: str) -> dt.date | None:
    """The birth date written in a resident ID number (characters 7–14), or ``None`` when it is no date."""
    try:
        return dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return None


def check_resident_id(value: str, birth_date: dt.date | None = None, today: dt.date | None = None) -> str | None:
    """GB 11643: 18 characters, a real birth date not in the future, the check digit, and the birth date field."""
    if not _RESIDENT_SHAPE.fullmatch(value):
        return "must be 18 characters: 17 digits and a digit or X check character"
    born = resident_id_birth_date(value)
    if born is None:
        return "contains no valid birth date"
    if born < EARLIEST_BIRTH_DATE or born > (today or dt.date.today()):
        return "contains a birth date out of range"
    if resident_id_check_char(value[:17]) != value[17]:
        return "has a wrong check character"
    if birth_date is not None and birth_date != born:
        return "does not match birth_date"
    return None


def check_id_number(
    id_type: str, value: str, birth_date: dt.date | None = None, today: dt.date | None = None
) -> str | None:
    """The rule of ``id_type`` applied to a normalised ID number (``today``: the date birth dates are judged by)."""
    match id_type:
        case "resident_id":
            return check_resident_id(value, birth_date, today)
        case "passport":
            return None if _PASSPORT.fullmatch(value) else "must be 5 to 17 letters or digits"
        case "hk_macau_permit":
            return None if _HK_MACAU_PERMIT.fullmatch(value) else "must be H or M followed by 8 or 10 digits"
        case "taiwan_permit":
            return None if _TAIWAN_PERMIT.fullmatch(value) else "must be 8 or 10 digits"
        case "foreign_permanent_resident" | "other":
            return None if _OTHER_ID.fullmatch(value) else "must be 4 to 32 letters or digits"
        case _:
            return "has an unknown id_type"


def check_mobile(value: str) -> str | None:
    """Mainland mobile: 11 digits starting 13–19."""
    return None if _MOBILE.fullmatch(value) else "must be 11 digits starting with 13 to 19"


def check_email(value: str) -> str | None:
    """A plain address ``local@domain.tld`` of at most 254 characters (local part at most 64)."""
    if len(value) > 254 or not _EMAIL.fullmatch(value) or len(value.partition("@")[0]) > 64:
        return "must be an e-mail address such as name@example.com"
    return None


def credit_code_check_char(body: str) -> str:
    """The GB 32100 check character of the first 17 characters ``body``."""
    total = sum(CREDIT_CODE_CHARSET.index(ch) * w for ch, w in zip(body, _CREDIT_WEIGHTS, strict=True))
    return CREDIT_CODE_CHARSET[(31 - total % 31) % 31]


def check_credit_code(value: str) -> str | None:
    """Unified social credit code (GB 32100): 18 characters of its alphabet with a valid check character."""
    if not _CREDIT_SHAPE.fullmatch(value):
        return "must be 18 digits or capital letters other than I, O, Z, S, V"
    if credit_code_check_char(value[:17]) != value[17]:
        return "has a wrong check character"
    return None


def check_birth_date(value: dt.date, today: dt.date | None = None) -> str | None:
    """Not in the future, not before 1900."""
    if value > (today or dt.date.today()):
        return "must not be in the future"
    if value < EARLIEST_BIRTH_DATE:
        return "must not be before 1900-01-01"
    return None


def parse_date(value: str) -> dt.date | None:
    """An ISO date ``YYYY-MM-DD``, or ``None`` when it is not one."""
    if len(value) != 10:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        return None
