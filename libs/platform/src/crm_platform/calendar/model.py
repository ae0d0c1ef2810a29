"""A branch's business calendar as data: weekly working intervals, public holidays, make-up days (调休).

The JSON shape (the gateway's calendar admin API stores and serves it verbatim)::

    {"time_zone": "Asia/Shanghai",
     "weekly": {"mon": [["09:00", "12:00"], ["13:30", "17:30"]], "tue": [...], ..., "sat": [], "sun": []},
     "holidays": ["2026-01-01", ...], "makeup_days": ["2026-01-04", ...], "makeup_as": "mon"}

An interval belongs to the date it starts on; one whose end is not after its start ends the next day (a night
shift, ``["22:00", "06:00"]``). A holiday has no interval; a make-up day has the intervals of ``makeup_as``
whatever its weekday. Every instant answered is an aware UTC datetime, exact to the microsecond.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Final, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crm_platform.calendar.timeline import (
    DAY_SECONDS,
    MAX_YEAR,
    MIN_YEAR,
    Timeline,
    duration_us,
    instant_us,
    local_to_utc_us,
    utc_datetime,
)

WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_TIME_ZONE: Final = "Asia/Shanghai"
FIELDS: Final = ("time_zone", "weekly", "holidays", "makeup_days", "makeup_as")

_TIME = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MAKEUP_PLACE = re.compile(r"makeup_days\[([0-9]+)\]")
_ONE_DAY = dt.timedelta(days=1)


class CalendarError(ValueError):
    """A calendar that cannot be: ``field`` is the path of the offending value (``weekly.mon[1]``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class Interval(NamedTuple):
    """Working hours in seconds after the local midnight of the date they start on.

    ``0 <= start < 86400`` and ``start < end <= start + 86400``; an ``end`` past 86400 falls on the next day.
    """

    start: int
    end: int

    def describe(self) -> str:
        """``09:00–12:00``, as the JSON spells it."""
        return f"{format_time(self.start)}–{format_end(self.end)}"


def parse_time(value: object, where: str, *, end: bool) -> int:
    """Seconds after midnight of ``HH:MM`` or ``HH:MM:SS``; ``24:00`` only as an end."""
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise CalendarError(where, f"expected a time HH:MM or HH:MM:SS, got {value!r}")
    hours, minutes, seconds = int(match[1]), int(match[2]), int(match[3] or 0)
    if hours == 24 and minutes == 0 and seconds == 0:
        if not end:
            raise CalendarError(where, "24:00 may only end an interval")
        return DAY_SECONDS
    if hours > 23 or minutes > 59 or seconds > 59:
        raise CalendarError(where, f"no such time of day: {value!r}")
    return hours * 3600 + minutes * 60 + seconds


def format_time(seconds: int) -> str:
    """``HH:MM``, or ``HH:MM:SS`` when the seconds are not zero."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}" if secs else f"{hours:02d}:{minutes:02d}"


def format_end(end: int) -> str:
    """An interval's end as the JSON spells it: ``24:00`` for midnight of its own day, a time of day otherwise."""
    return "24:00" if end == DAY_SECONDS else format_time(end % DAY_SECONDS if end > DAY_SECONDS else end)


def _parse_date(value: object, where: str) -> dt.date:
    if not isinstance(value, str) or _DATE.fullmatch(value) is None:
        raise CalendarError(where, f"expected a date YYYY-MM-DD, got {value!r}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise CalendarError(where, f"no such date: {value!r}") from None


def _load_zone(name: object) -> ZoneInfo:
    if not isinstance(name, str):
        raise CalendarError("time_zone", f"expected an IANA time zone name, got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CalendarError("time_zone", f"unknown time zone {name!r}") from None


def _sorted_dates(values: Iterable[object], name: str) -> list[dt.date]:
    dates: list[dt.date] = []
    for value in values:
        if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
            raise CalendarError(name, f"expected dates, got {value!r}")
        dates.append(value)
    return sorted(dates)


def _check_years(dates: Sequence[dt.date], name: str) -> None:
    for i, date in enumerate(dates):
        if not MIN_YEAR <= date.year <= MAX_YEAR:
            raise CalendarError(f"{name}[{i}]", f"{date} is outside the years {MIN_YEAR}..{MAX_YEAR}")


def _overlap(labelled: list[tuple[int, int, str, Interval]]) -> tuple[str, str] | None:
    """The first overlap among ``(start, end, label, interval)`` on one time axis: the later one's label and what
    it overlaps (sorted by start, an overlap always shows between neighbours)."""
    labelled.sort(key=lambda item: item[0])
    for (_, end, label, interval), (start, _, other, _) in pairwise(labelled):
        if start < end:
            return other, f"overlaps {label} ({interval.describe()})"
    return None


@dataclass(frozen=True)
class Calendar:
    """A business calendar; immutable, so its expansion onto the time line is computed once and kept.

    ``weekly`` holds the intervals of each ISO weekday, Monday first (:data:`WEEKDAYS`). Build one from the
    JSON shape with :meth:`from_dict`; every operation takes aware datetimes (``ValueError`` when naive) and
    answers aware UTC datetimes. Instants and dates are supported in the local years 1970..2200.
    """

    weekly: tuple[tuple[Interval, ...], ...]
    holidays: frozenset[dt.date] = frozenset()
    makeup_days: frozenset[dt.date] = frozenset()
    makeup_as: str = "mon"
    time_zone: str = DEFAULT_TIME_ZONE
    _timeline: Timeline = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        zone = _load_zone(self.time_zone)
        if len(self.weekly) != len(WEEKDAYS):
            raise CalendarError("weekly", f"expected {len(WEEKDAYS)} weekdays, got {len(self.weekly)}")
        for name, day in zip(WEEKDAYS, self.weekly, strict=True):
            for i, interval in enumerate(day):
                try:
                    start, end = interval
                except (TypeError, ValueError):
                    raise CalendarError(f"weekly.{name}[{i}]", f"expected (start, end), got {interval!r}") from None
                if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < DAY_SECONDS):
                    raise CalendarError(f"weekly.{name}[{i}]", f"start must be a second of the day, got {start!r}")
                if not start < end <= start + DAY_SECONDS:
                    raise CalendarError(f"weekly.{name}[{i}]", "end must be after the start, at most a day later")
        if not any(self.weekly):
            raise CalendarError("weekly", "no working interval on any weekday")
        self._check_weekly_overlaps()
        holidays, makeup_days = frozenset(self.holidays), frozenset(self.makeup_days)
        _check_years(_sorted_dates(holidays, "holidays"), "holidays")
        _check_years(_sorted_dates(makeup_days, "makeup_days"), "makeup_days")
        if self.makeup_as not in WEEKDAYS:
            raise CalendarError("makeup_as", f"expected one of {', '.join(WEEKDAYS)}, got {self.makeup_as!r}")
        # Sorted within each day: the canonical form, so that equal calendars compare (and hash) equal.
        weekly = tuple(tuple(sorted(Interval(*interval) for interval in day)) for day in self.weekly)
        object.__setattr__(self, "weekly", weekly)
        object.__setattr__(self, "holidays", holidays)
        object.__setattr__(self, "makeup_days", makeup_days)
        self._check_makeup_days(sorted(makeup_days))
        object.__setattr__(self, "_timeline", Timeline(zone, self.intervals_on))

    def __reduce__(self) -> tuple[type[Calendar], tuple[Any, ...]]:
        # Pickled and copied as its data: the expansion (with its lock) is rebuilt on demand.
        return (Calendar, (self.weekly, self.holidays, self.makeup_days, self.makeup_as, self.time_zone))

    def _check_weekly_overlaps(self) -> None:
        """Intervals of a weekday against each other and against the next weekday's (a night shift reaches it)."""
        for w, name in enumerate(WEEKDAYS):
            following = WEEKDAYS[(w + 1) % 7]
            labelled = [(iv[0], iv[1], f"weekly.{name}[{i}]", Interval(*iv)) for i, iv in enumerate(self.weekly[w])]
            labelled += [
                (iv[0] + DAY_SECONDS, iv[1] + DAY_SECONDS, f"weekly.{following}[{i}]", Interval(*iv))
                for i, iv in enumerate(self.weekly[(w + 1) % 7])
            ]
            problem = _overlap(labelled)
            if problem is not None:
                raise CalendarError(*problem)

    def _check_makeup_days(self, makeup_days: Sequence[dt.date]) -> None:
        """No make-up day is a holiday, and none overlaps the day before or after it (night shifts again)."""
        for i, date in enumerate(makeup_days):
            where = f"makeup_days[{i}]"
            if date in self.holidays:
                raise CalendarError(where, f"{date} is also a holiday")
            for first in (date - _ONE_DAY, date):
                labelled = [
                    (iv.start + offset, iv.end + offset, f"the interval of {day} ({self._source(day)})", iv)
                    for offset, day in ((0, first), (DAY_SECONDS, first + _ONE_DAY))
                    for iv in self.intervals_on(day)
                ]
                problem = _overlap(labelled)
                if problem is not None:
                    raise CalendarError(where, f"{date} as {self.makeup_as}: {problem[0]} {problem[1]}")

    def _source(self, date: dt.date) -> str:
        return f"make-up day as {self.makeup_as}" if date in self.makeup_days else WEEKDAYS[date.weekday()]

    # -- JSON -----------------------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calendar:
        """The calendar of the JSON shape; ``CalendarError`` names the path of the first bad value."""
        if not isinstance(data, Mapping):
            raise CalendarError("calendar", f"expected an object, got {type(data).__name__}")
        for key in data:
            if key not in FIELDS:
                raise CalendarError(str(key), f"unknown field; expected one of {', '.join(FIELDS)}")
        time_zone = data.get("time_zone", DEFAULT_TIME_ZONE)
        _load_zone(time_zone)  # first, so that a bad zone is named even when something else is wrong too
        weekly_data = data.get("weekly", {})
        if not isinstance(weekly_data, Mapping):
            raise CalendarError("weekly", "expected an object of weekdays (mon..sun)")
        for key in weekly_data:
            if key not in WEEKDAYS:
                raise CalendarError(f"weekly.{key}", f"unknown weekday; expected one of {', '.join(WEEKDAYS)}")
        weekly = tuple(_parse_day(weekly_data.get(name, []), f"weekly.{name}") for name in WEEKDAYS)
        holidays = _parse_dates(data.get("holidays", []), "holidays")
        makeup_days = _parse_dates(data.get("makeup_days", []), "makeup_days")
        makeup_as = data.get("makeup_as", "mon")
        if not isinstance(makeup_as, str) or makeup_as not in WEEKDAYS:
            raise CalendarError("makeup_as", f"expected one of {', '.join(WEEKDAYS)}, got {makeup_as!r}")
        for i, date in enumerate(makeup_days):
            if date in holidays:  # named by its place in the document, not in sorted order
                raise CalendarError(f"makeup_days[{i}]", f"{date} is also a holiday")
        try:
            return cls(weekly, frozenset(holidays), frozenset(makeup_days), makeup_as, time_zone)
        except CalendarError as error:
            # The constructor numbers make-up days in date order; the document's order is the one to name.
            place = _MAKEUP_PLACE.fullmatch(error.field)
            if place is None:
                raise
            date = sorted(set(makeup_days))[int(place[1])]
            raise CalendarError(f"makeup_days[{makeup_days.index(date)}]", error.reason) from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape, canonical: every weekday present, intervals and dates sorted."""
        return {
            "time_zone": self.time_zone,
            "weekly": {
                name: [[format_time(iv.start), format_end(iv.end)] for iv in day]
                for name, day in zip(WEEKDAYS, self.weekly, strict=True)
            },
            "holidays": [date.isoformat() for date in sorted(self.holidays)],
            "makeup_days": [date.isoformat() for date in sorted(self.makeup_days)],
            "makeup_as": self.makeup_as,
        }

    # -- the raw rule -----------------------------------------------------------------------------------------------

    @property
    def zone(self) -> ZoneInfo:
        """The calendar's time zone."""
        return self._timeline.zone

    def intervals_on(self, date: dt.date) -> tuple[Interval, ...]:
        """The local intervals that start on ``date``: none on a holiday, ``makeup_as``'s on a make-up day."""
        if date in self.holidays:
            return ()
        if date in self.makeup_days:
            return self.weekly[WEEKDAYS.index(self.makeup_as)]
        return self.weekly[date.weekday()]

    def is_working_day(self, date: dt.date) -> bool:
        """Whether an interval starts on ``date``."""
        return bool(self.intervals_on(date))

    # -- operations -------------------------------------------------------------------------------------------------

    def is_working(self, t: dt.datetime) -> bool:
        """Whether ``t`` lies inside a working interval (its start included, its end not)."""
        return self._timeline.is_working(instant_us(t))

    def next_working_instant(self, t: dt.datetime) -> dt.datetime:
        """``t`` itself when working, else the start of the next working interval."""
        return utc_datetime(self._timeline.next_working(instant_us(t)))

    def add(self, t: dt.datetime, duration: dt.timedelta) -> dt.datetime:
        """The earliest instant ``r >= t`` such that the business time in ``[t, r)`` is ``duration``.

        Counting starts at the next working instant, so from a holiday or a weekend it starts when work does;
        a result at the very end of an interval is that end, not the start of the next one.
        """
        return utc_datetime(self._timeline.add(instant_us(t), duration_us(duration)))

    def elapsed(self, a: dt.datetime, b: dt.datetime) -> dt.timedelta:
        """Business time in ``[a, b)``; zero when ``b <= a``."""
        return dt.timedelta(microseconds=self._timeline.elapsed(instant_us(a, "a"), instant_us(b, "b")))

    def add_business_days(self, t: dt.datetime, n: int) -> dt.datetime:
        """The local wall-clock time of ``t`` on the ``n``-th working day after ``t``'s local date.

        ``n < 0`` counts working days before it; ``n == 0`` answers ``t``. A wall time that does not exist on
        that day (a DST gap) becomes the first instant after the gap, an ambiguous one its first occurrence.
        """
        us = instant_us(t)
        if not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        if n == 0:
            return utc_datetime(us)
        zone = self.zone
        local = utc_datetime(us).astimezone(zone)
        date = self._timeline.add_working_days(local.date(), n)
        return utc_datetime(local_to_utc_us(zone, dt.datetime.combine(date, local.time())))


def _parse_day(value: object, where: str) -> tuple[Interval, ...]:
    if not isinstance(value, list | tuple):
        raise CalendarError(where, "expected a list of [start, end] intervals")
    intervals: list[Interval] = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise CalendarError(f"{where}[{i}]", f"expected [start, end], got {pair!r}")
        start = parse_time(pair[0], f"{where}[{i}][0]", end=False)
        end = parse_time(pair[1], f"{where}[{i}][1]", end=True)
        intervals.append(Interval(start, end if end > start else end + DAY_SECONDS))
    return tuple(intervals)


def _parse_dates(value: object, where: str) -> list[dt.date]:
    if not isinstance(value, list | tuple):
        raise CalendarError(where, "expected a list of dates YYYY-MM-DD")
    dates = [_parse_date(item, f"{where}[{i}]") for i, item in enumerate(value)]
    _check_years(dates, where)
    return dates
