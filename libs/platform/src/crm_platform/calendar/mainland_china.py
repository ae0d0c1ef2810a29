"""Public holidays and make-up working days (调休) of mainland China: the data of the default calendar.

Shipped as Python so that every install of crm-platform carries it (no package data to declare). A branch whose
calendar differs, or a year whose State Council notice (国务院办公厅关于某年部分节假日安排的通知) is published after
this release, is set through the gateway's calendar admin route, which stores the whole JSON shape.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Any, Final

from crm_platform.calendar.model import Calendar

# (festival, first day off, last day off); every date of the range is a holiday, weekend days included.
HOLIDAY_RANGES: Final[dict[int, tuple[tuple[str, str, str], ...]]] = {
    # The State Council notice for 2026 (confirmed).
    2026: (
        ("元旦", "2026-01-01", "2026-01-03"),
        ("春节", "2026-02-15", "2026-02-23"),
        ("清明节", "2026-04-04", "2026-04-06"),
        ("劳动节", "2026-05-01", "2026-05-05"),
        ("端午节", "2026-06-19", "2026-06-21"),
        ("中秋节", "2026-09-25", "2026-09-27"),
        ("国庆节", "2026-10-01", "2026-10-07"),
    ),
    # PROVISIONAL: the notice for 2027 was not at hand. These are the statutory days of 全国年节及纪念日放假办法
    # as revised in 2024, on the lunar and solar-term dates of 2027 — 春节 is 除夕 (Feb 5) and 初一..初三 (Feb 6-8;
    # the new moon is at 23:56 Beijing time on Feb 6); 清明 is the solar term of Apr 5; 端午 五月初五 Jun 9; 中秋
    # 八月十五 Sep 15 — plus the weekday days off in lieu (补假) its Article 5 requires for statutory days that fall
    # on a weekend (Feb 6-7 → Feb 9-10, May 1-2 → May 3-4, Oct 2-3 → Oct 4-5). The notice also moves working days
    # (调休) that cannot be derived; none are assumed. Replace this year through the admin route once published.
    2027: (
        ("元旦", "2027-01-01", "2027-01-01"),
        ("春节", "2027-02-05", "2027-02-10"),
        ("清明节", "2027-04-05", "2027-04-05"),
        ("劳动节", "2027-05-01", "2027-05-04"),
        ("端午节", "2027-06-09", "2027-06-09"),
        ("中秋节", "2027-09-15", "2027-09-15"),
        ("国庆节", "2027-10-01", "2027-10-05"),
    ),
}

# Weekend days that are working days, with Monday's hours.
MAKEUP_DAYS: Final[dict[int, tuple[str, ...]]] = {
    2026: ("2026-01-04", "2026-02-14", "2026-02-28", "2026-05-09", "2026-09-20", "2026-10-10"),
    2027: (),  # provisional, see above
}

# Years whose tables are not from a State Council notice: an administrator should replace them.
PROVISIONAL_YEARS: Final = frozenset({2027})

WEEKDAY_HOURS: Final = [["09:00", "12:00"], ["13:30", "17:30"]]


def holidays(year: int) -> list[str]:
    """Every holiday of ``year`` (ISO dates, ascending); ``KeyError`` for a year not shipped."""
    out: list[str] = []
    for _, first, last in HOLIDAY_RANGES[year]:
        date, stop = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
        while date <= stop:
            out.append(date.isoformat())
            date += dt.timedelta(days=1)
    return out


def default_calendar_dict() -> dict[str, Any]:
    """A fresh copy of :data:`DEFAULT_CALENDAR_DICT`, free to change."""
    return {
        "time_zone": "Asia/Shanghai",
        "weekly": {
            **{day: [list(interval) for interval in WEEKDAY_HOURS] for day in ("mon", "tue", "wed", "thu", "fri")},
            "sat": [],
            "sun": [],
        },
        "holidays": [date for year in sorted(HOLIDAY_RANGES) for date in holidays(year)],
        "makeup_days": [date for year in sorted(MAKEUP_DAYS) for date in MAKEUP_DAYS[year]],
        "makeup_as": "mon",
    }


# The default calendar in the JSON shape. Shared: copy it (default_calendar_dict()) before changing anything.
DEFAULT_CALENDAR_DICT: Final[dict[str, Any]] = default_calendar_dict()


@cache
def default_calendar() -> Calendar:
    """Asia/Shanghai, Mon–Fri 09:00–12:00 and 13:30–17:30, mainland China's holidays of 2026 and 2027.

    One shared instance, so its expansion onto the time line is computed once per process.
    """
    return Calendar.from_dict(default_calendar_dict())
