"""Birthday windows: which month-days a date window covers, and where a birth date falls in it."""

from __future__ import annotations

import datetime as dt

from crm_platform.errors import FieldViolation, InvalidArgument

MAX_WINDOW_DAYS = 93


def check_window(start: str, end: str) -> tuple[dt.date, dt.date]:
    """Parse and check a window ``from``..``to`` (dates, at most 93 days, not reversed)."""
    violations = []
    dates: dict[str, dt.date] = {}
    for name, value in (("from", start), ("to", end)):
        try:
            dates[name] = dt.date.fromisoformat(value)
        except ValueError:
            violations.append(FieldViolation(name, "must be a date YYYY-MM-DD"))
    if not violations:
        if dates["to"] < dates["from"]:
            violations.append(FieldViolation("to", "must not be before from"))
        elif (dates["to"] - dates["from"]).days > MAX_WINDOW_DAYS:
            violations.append(FieldViolation("to", f"must be at most {MAX_WINDOW_DAYS} days after from"))
    if violations:
        raise InvalidArgument(violations)
    return dates["from"], dates["to"]


def month_days(start: dt.date, end: dt.date) -> list[tuple[int, int]]:
    """The (month, day) pairs the window covers; 29 February too when the window holds 28 February of a common
    year (such a birthday is kept on the 28th)."""
    pairs = []
    day = start
    while day <= end:
        pairs.append((day.month, day.day))
        if day.month == 2 and day.day == 28 and not _leap(day.year):
            pairs.append((2, 29))
        day += dt.timedelta(days=1)
    return pairs


def birthday_in_window(birth: dt.date, start: dt.date, end: dt.date) -> dt.date | None:
    """The date inside ``[start, end]`` on which a person born on ``birth`` has their birthday, or None."""
    for year in range(start.year, end.year + 1):
        day = birth.day if not (birth.month == 2 and birth.day == 29 and not _leap(year)) else 28
        on = dt.date(year, birth.month, day)
        if start <= on <= end:
            return on
    return None


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
