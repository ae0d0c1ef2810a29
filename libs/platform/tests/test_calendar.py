"""Business calendars: every operation against a second-by-second oracle, plus the named cases of the spec.

The oracle reads only the raw JSON shape (it parses the times itself): it marks each working second of a window
in a bytearray, date by date from the weekday intervals, holidays and make-up days, and then walks that array.
It knows nothing of the implementation's prefix sums, bisects or lazy years. The property tests use time zones
without DST (checked below), where a local wall time is one fixed offset from UTC.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st

from crm_platform.calendar import (
    DEFAULT_CALENDAR_DICT,
    PROVISIONAL_YEARS,
    WEEKDAYS,
    Calendar,
    CalendarError,
    default_calendar,
)
from crm_platform.calendar import mainland_china as cn

DAY = 86_400
WEEK = 7 * DAY
WALK = 3 * DAY  # the longest span an oracle walks, in seconds
UTC = dt.UTC
SH = ZoneInfo("Asia/Shanghai")
DST_FREE = (
    "Asia/Shanghai",
    "UTC",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "Pacific/Kiritimati",
    "Pacific/Marquesas",
    "America/Bogota",
)
FIRST_DATE, LAST_DATE = dt.date(2020, 1, 1), dt.date(2030, 12, 31)
PROPERTY = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


def sh(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> dt.datetime:
    """A wall time in Asia/Shanghai."""
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=SH)


def local(t: dt.datetime) -> dt.datetime:
    return t.astimezone(SH)


# -- the oracle -------------------------------------------------------------------------------------------------------


ISO_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # the oracle's own, as the JSON spells them


def raw_seconds(text: str) -> int:
    parts = [int(part) for part in text.split(":")]
    return parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) == 3 else 0)


def raw_intervals(data: dict[str, Any], date: dt.date) -> list[tuple[int, int]]:
    """The local intervals that start on ``date`` by the raw data: seconds after that date's midnight."""
    if date.isoformat() in data.get("holidays", []):
        return []
    makeup = date.isoformat() in data.get("makeup_days", [])
    day = data.get("makeup_as", "mon") if makeup else ISO_WEEKDAYS[date.weekday()]
    out = []
    for start_text, end_text in data.get("weekly", {}).get(day, []):
        start, end = raw_seconds(start_text), raw_seconds(end_text)
        out.append((start, end if end > start else end + DAY))
    return out


class Oracle:
    """The working seconds of the intervals starting on dates ``first..last``, one byte per second."""

    def __init__(self, data: dict[str, Any], first: dt.date, last: dt.date) -> None:
        self.data = data
        self.zone = ZoneInfo(data.get("time_zone", "Asia/Shanghai"))
        midnight = dt.datetime.combine(first, dt.time(), tzinfo=self.zone)
        offset = midnight.utcoffset()
        assert offset == dt.datetime.combine(last + dt.timedelta(days=2), dt.time(), tzinfo=self.zone).utcoffset()
        self.origin = int(midnight.timestamp())
        self.days = (last - first).days + 1
        self.mask = bytearray((self.days + 1) * DAY)
        self.overlap = False
        for k in range(self.days):
            for start, end in raw_intervals(data, first + dt.timedelta(days=k)):
                a, b = k * DAY + start, k * DAY + end
                if self.mask.find(1, a, b) >= 0:
                    self.overlap = True
                self.mask[a:b] = b"\x01" * (b - a)
        # Exact from the end of the day before ``first`` (its intervals are not marked) to the start of the next.
        self.low, self.high = self.origin + DAY, self.origin + self.days * DAY

    def index(self, s: int) -> int:
        assert self.low <= s <= self.high, "the instant is outside the oracle's window"
        return s - self.origin

    def is_working(self, s: int) -> bool:
        return self.mask[self.index(s)] == 1

    def next_working(self, s: int, limit: int) -> int | None:
        i = self.index(s)
        found = self.mask.find(1, i, self.index(min(s + limit, self.high)))
        return None if found < 0 else self.origin + found

    def elapsed(self, a: int, b: int) -> int:
        return 0 if b <= a else self.mask.count(1, self.index(a), self.index(b))

    def add(self, s: int, duration: int, limit: int) -> int | None:
        """The instant after the ``duration``-th working second from ``s``, walking at most ``limit`` seconds."""
        if duration == 0:
            return s
        i, stop, worked, mask = self.index(s), self.index(min(s + limit, self.high)), 0, self.mask
        while i < stop:
            worked += mask[i]
            i += 1
            if worked == duration:
                return self.origin + i
        return None

    def add_business_days(self, t: dt.datetime, n: int) -> dt.datetime:
        wall = t.astimezone(self.zone)
        date, step, left = wall.date(), (1 if n > 0 else -1), abs(n)
        while left:
            date += dt.timedelta(days=step)
            if raw_intervals(self.data, date):
                left -= 1
        return dt.datetime.combine(date, wall.time(), tzinfo=self.zone).astimezone(UTC)


def oracle_around(case: Case, start: int, span: int = WALK) -> Oracle:
    """An oracle exact over ``[start, start + span]``."""
    zone = ZoneInfo(case.data["time_zone"])
    first = dt.datetime.fromtimestamp(start, zone).date() - dt.timedelta(days=1)
    last = dt.datetime.fromtimestamp(start + span, zone).date() + dt.timedelta(days=1)
    oracle = Oracle(case.data, first, last)
    assert not oracle.overlap, "an accepted calendar has overlapping intervals"
    return oracle


# -- strategies -------------------------------------------------------------------------------------------------------


def clock(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}" if secs else f"{hours:02d}:{minutes:02d}"


def spell(start: int, end: int, draw: st.DrawFn) -> list[str]:
    """``[start, end]`` as JSON times, ``end`` in ``(start, start + DAY]`` seconds after the start's midnight."""
    if end == DAY:
        return [clock(start), draw(st.sampled_from(["24:00", "00:00"]))]
    return [clock(start), clock(end - DAY if end > DAY else end)]


@st.composite
def random_weeks(draw: st.DrawFn, overlapping: bool = False) -> dict[str, list[list[str]]]:
    """Intervals anywhere in the week, up to a day long, night shifts and Sunday-to-Monday ones included; with
    ``overlapping``, some may overlap (for the validation test)."""
    grain = draw(st.sampled_from([1, 60, 900]))
    kept: list[tuple[int, int]] = []
    for _ in range(draw(st.integers(3 if overlapping else 1, 10))):
        start = draw(st.integers(0, WEEK // grain - 1)) * grain
        shortest = DAY // 8 // grain if overlapping else 1  # long ones, to collide often
        length = draw(st.one_of(st.integers(shortest, DAY // grain), st.just(DAY // grain))) * grain
        clear = all((start - a) % WEEK >= n and (a - start) % WEEK >= length for a, n in kept)
        if clear or (overlapping and draw(st.booleans())):
            kept.append((start, length))
    weekly: dict[str, list[list[str]]] = {}
    for start, length in kept:
        day, offset = divmod(start, DAY)
        weekly.setdefault(WEEKDAYS[day], []).append(spell(offset, offset + length, draw))
    for day in draw(st.lists(st.sampled_from(WEEKDAYS), unique=True, max_size=2)):
        weekly.setdefault(day, [])  # an explicit empty weekday, as the admin page sends them
    return weekly


@st.composite
def office_weeks(draw: st.DrawFn) -> dict[str, list[list[str]]]:
    """Branch-like weeks: per weekday nothing, one stretch or two with a lunch break, sometimes a night shift."""
    weekly: dict[str, list[list[str]]] = {}
    for day in WEEKDAYS:
        shape = draw(st.sampled_from(["closed", "one", "lunch", "lunch", "night"]))
        grain = draw(st.sampled_from([1, 60, 1800]))
        points = [draw(st.integers(6 * 3600 // grain, 12 * 3600 // grain)) * grain]
        for _ in range(3):  # 09:00–12:00 and 13:30–17:30, or any other such pair, in seconds
            points.append(points[-1] + draw(st.integers(1, 3 * 3600 // grain)) * grain)
        if shape == "one":
            weekly[day] = [spell(points[0], points[3], draw)]
        elif shape == "lunch":
            weekly[day] = [spell(points[0], points[1], draw), spell(points[2], points[3], draw)]
        elif shape == "night":
            start = draw(st.integers(22 * 3600, DAY - 1))
            weekly[day] = [spell(points[0], points[1], draw), spell(start, DAY + draw(st.integers(0, 6 * 3600)), draw)]
    if not any(weekly.values()):
        weekly["mon"] = [["09:00", "12:00"], ["13:30", "17:30"]]
    return weekly


Raw = tuple[dict[str, Any], dt.date]  # a calendar's JSON shape and the date its special days surround


@dataclass(frozen=True)
class Case:
    """A calendar, the raw data it was built from, and the date its holidays and make-up days surround."""

    calendar: Calendar
    data: dict[str, Any]
    base: dt.date


@st.composite
def raw_calendars(draw: st.DrawFn, weeks: st.SearchStrategy[dict[str, list[list[str]]]] | None = None) -> Raw:
    base = draw(st.dates(FIRST_DATE, LAST_DATE))
    offsets = draw(st.lists(st.integers(-4, 8), unique=True, max_size=7))
    split = draw(st.integers(0, len(offsets)))
    data = {
        "time_zone": draw(st.sampled_from(DST_FREE)),
        "weekly": draw(weeks if weeks is not None else st.one_of(office_weeks(), random_weeks())),
        "holidays": [(base + dt.timedelta(days=o)).isoformat() for o in offsets[:split]],
        "makeup_days": [(base + dt.timedelta(days=o)).isoformat() for o in offsets[split:]],
        "makeup_as": draw(st.sampled_from(WEEKDAYS)),
    }
    return data, base


@st.composite
def cases(draw: st.DrawFn) -> Case:
    data, base = draw(raw_calendars())
    try:
        calendar = Calendar.from_dict(data)
    except CalendarError:
        reject()  # a make-up day whose night shift runs into its neighbour's: the validation test covers those
    return Case(calendar, data, base)


@st.composite
def instants(draw: st.DrawFn, case: Case) -> int:
    """Epoch seconds near the case's special days: often on or next to an interval's bound, or on a holiday or
    make-up day."""
    zone = ZoneInfo(case.data["time_zone"])
    days = [case.base + dt.timedelta(days=k) for k in range(-3, 8)]
    bounds = [(day, bound) for day in days for interval in raw_intervals(case.data, day) for bound in interval]
    special = [day for day in days if day.isoformat() in case.data["holidays"] + case.data["makeup_days"]]
    kind = draw(st.sampled_from(["bound", "bound", "special", "any"]))
    if kind == "bound" and bounds:
        day, offset = draw(st.sampled_from(bounds))
        offset += draw(st.sampled_from([0, 0, 0, -1, 1, -2, 2]))
    else:
        day = draw(st.sampled_from(special if kind == "special" and special else days))
        offset = draw(st.integers(0, DAY - 1))
    return int(dt.datetime.combine(day, dt.time(), tzinfo=zone).timestamp()) + offset


def aware(s: int, case: Case) -> st.SearchStrategy[dt.datetime]:
    """Epoch seconds as an aware datetime in some zone: the operations must not care which."""
    zones = [UTC, ZoneInfo(case.data["time_zone"]), dt.timezone(dt.timedelta(hours=-5, minutes=-30))]
    return st.sampled_from(zones).map(lambda zone: dt.datetime.fromtimestamp(s, zone))


def epoch(t: dt.datetime) -> int:
    assert t.tzinfo is UTC and t.microsecond == 0
    return int(t.timestamp())


durations = st.one_of(st.integers(0, 5), st.integers(0, 4 * 3600), st.integers(0, 2 * DAY))


def test_property_zones_have_no_dst_in_the_tested_years() -> None:
    for name in DST_FREE:
        zone = ZoneInfo(name)
        offsets = {
            dt.datetime.combine(FIRST_DATE + dt.timedelta(days=k), dt.time(), tzinfo=zone).utcoffset()
            for k in range(-30, (LAST_DATE - FIRST_DATE).days + 30, 5)
        }
        assert len(offsets) == 1, name


# -- properties -------------------------------------------------------------------------------------------------------


@PROPERTY
@given(data=st.data(), case=cases())
def test_is_working_matches_the_oracle(data: st.DataObject, case: Case) -> None:
    points = data.draw(st.lists(instants(case), min_size=1, max_size=20))
    oracle = oracle_around(case, min(points), max(points) - min(points))
    for s in points:
        assert case.calendar.is_working(data.draw(aware(s, case))) == oracle.is_working(s), s


@PROPERTY
@given(data=st.data(), case=cases())
def test_next_working_instant_matches_the_oracle(data: st.DataObject, case: Case) -> None:
    s = data.draw(instants(case))
    oracle = oracle_around(case, s)
    found = epoch(case.calendar.next_working_instant(data.draw(aware(s, case))))
    expected = oracle.next_working(s, WALK)
    if expected is None:
        assert found >= s + WALK
    else:
        assert found == expected


@PROPERTY
@given(data=st.data(), case=cases(), duration=durations)
def test_add_matches_the_oracle(data: st.DataObject, case: Case, duration: int) -> None:
    s = data.draw(instants(case))
    oracle = oracle_around(case, s)
    result = case.calendar.add(data.draw(aware(s, case)), dt.timedelta(seconds=duration))
    expected = oracle.add(s, duration, WALK)
    if expected is None:  # more business time than the walk holds: the result lies beyond it
        assert epoch(result) > s + WALK
        assert oracle.elapsed(s, s + WALK) < duration
    else:
        assert epoch(result) == expected


@PROPERTY
@given(data=st.data(), case=cases())
def test_elapsed_matches_the_oracle(data: st.DataObject, case: Case) -> None:
    a = data.draw(instants(case))
    b = a + data.draw(st.one_of(st.integers(-3600, WALK), st.integers(-2, 2)))
    oracle = oracle_around(case, min(a, b), abs(b - a))
    elapsed = case.calendar.elapsed(data.draw(aware(a, case)), data.draw(aware(b, case)))
    assert elapsed == dt.timedelta(seconds=oracle.elapsed(a, b))


@PROPERTY
@given(data=st.data(), case=cases(), n=st.integers(-12, 12))
def test_add_business_days_matches_the_oracle(data: st.DataObject, case: Case, n: int) -> None:
    t = data.draw(aware(data.draw(instants(case)), case))
    oracle = Oracle(case.data, case.base, case.base)  # dates only: no seconds to mark beyond one day
    assert case.calendar.add_business_days(t, n) == oracle.add_business_days(t, n)
    if n == 0:
        assert case.calendar.add_business_days(t, 0) == t


@PROPERTY
@given(data=st.data(), case=cases(), duration=durations)
def test_add_and_elapsed_agree(data: st.DataObject, case: Case, duration: int) -> None:
    t = data.draw(aware(data.draw(instants(case)), case))
    result = case.calendar.add(t, dt.timedelta(seconds=duration))
    assert result >= t
    assert case.calendar.elapsed(t, result) == dt.timedelta(seconds=duration)
    if duration:  # the earliest such instant: one second less is one second short
        assert case.calendar.elapsed(t, result - dt.timedelta(seconds=1)) == dt.timedelta(seconds=duration - 1)


@settings(deadline=None, max_examples=300)
@given(raw=st.one_of(raw_calendars(), raw_calendars(random_weeks(overlapping=True))))
def test_validation_rejects_exactly_the_overlapping_calendars(raw: Raw) -> None:
    data, base = raw
    # Three weeks around the special days: every weekday's pair with the next one, and each make-up day's
    # neighbours, are in it.
    oracle = Oracle(data, base - dt.timedelta(days=8), base + dt.timedelta(days=17))
    try:
        Calendar.from_dict(data)
    except CalendarError as error:
        event("rejected")
        assert oracle.overlap, str(error)
        assert "overlaps" in error.reason
        assert error.field.startswith(("weekly.", "makeup_days["))
    else:
        event("accepted")
        assert not oracle.overlap


@PROPERTY
@given(case=cases())
def test_json_round_trip(case: Case) -> None:
    shape = case.calendar.to_dict()
    again = Calendar.from_dict(json.loads(json.dumps(shape)))
    assert again == case.calendar
    assert hash(again) == hash(case.calendar)
    assert again.to_dict() == shape
    assert set(shape["weekly"]) == set(WEEKDAYS)


# -- the default calendar -------------------------------------------------------------------------------------------


def test_friday_afternoon_sla_of_four_hours_lands_monday_late_morning() -> None:
    # Friday 16:00–17:30 is 1.5 h, Monday 09:00–11:30 the other 2.5 h.
    assert local(default_calendar().add(sh(2026, 3, 6, 16), dt.timedelta(hours=4))) == sh(2026, 3, 9, 11, 30)


def test_lunch_break_is_skipped() -> None:
    calendar = default_calendar()
    assert local(calendar.add(sh(2026, 3, 10, 11), dt.timedelta(hours=2))) == sh(2026, 3, 10, 14, 30)
    assert not calendar.is_working(sh(2026, 3, 10, 12))
    assert calendar.is_working(sh(2026, 3, 10, 11, 59, 59))
    assert calendar.is_working(sh(2026, 3, 10, 13, 30))
    assert local(calendar.next_working_instant(sh(2026, 3, 10, 12, 15))) == sh(2026, 3, 10, 13, 30)
    assert local(calendar.next_working_instant(sh(2026, 3, 10, 12))) == sh(2026, 3, 10, 13, 30)
    assert calendar.elapsed(sh(2026, 3, 10, 11), sh(2026, 3, 10, 14)) == dt.timedelta(hours=1, minutes=30)
    # Ending exactly at the lunch break: the result is 12:00, not 13:30.
    assert local(calendar.add(sh(2026, 3, 10, 11), dt.timedelta(hours=1))) == sh(2026, 3, 10, 12)


def test_spring_festival_2026_make_up_saturday() -> None:
    calendar = default_calendar()
    # Friday Feb 13, 17:00 + 1 h: half an hour that evening, the rest on the make-up Saturday Feb 14.
    assert local(calendar.add(sh(2026, 2, 13, 17), dt.timedelta(hours=1))) == sh(2026, 2, 14, 9, 30)
    # Feb 15–23 off (Feb 23 is a Monday); Feb 24 back to work.
    assert local(calendar.add(sh(2026, 2, 14, 17), dt.timedelta(hours=1))) == sh(2026, 2, 24, 9, 30)
    assert calendar.elapsed(sh(2026, 2, 15), sh(2026, 2, 24)) == dt.timedelta(0)
    assert calendar.is_working(sh(2026, 2, 28, 10))  # the second make-up Saturday
    assert local(calendar.add_business_days(sh(2026, 2, 13, 10), 2)) == sh(2026, 2, 24, 10)


def test_national_day_week_2026() -> None:
    calendar = default_calendar()
    for day in range(1, 8):
        assert not calendar.is_working_day(dt.date(2026, 10, day))
        assert not calendar.is_working(sh(2026, 10, day, 10))
    assert calendar.is_working_day(dt.date(2026, 9, 20))  # Sunday, a make-up day
    assert calendar.is_working_day(dt.date(2026, 10, 10))  # Saturday, a make-up day
    assert local(calendar.add(sh(2026, 9, 30, 17), dt.timedelta(hours=1))) == sh(2026, 10, 8, 9, 30)
    assert local(calendar.add_business_days(sh(2026, 9, 30, 15), 1)) == sh(2026, 10, 8, 15)
    assert local(calendar.add_business_days(sh(2026, 10, 8, 15), -1)) == sh(2026, 9, 30, 15)
    assert local(calendar.add_business_days(sh(2026, 10, 9, 15), 1)) == sh(2026, 10, 10, 15)
    assert local(calendar.next_working_instant(sh(2026, 10, 4, 3))) == sh(2026, 10, 8, 9)


def test_pause_starting_on_a_holiday() -> None:
    calendar = default_calendar()
    # The clock stopped on Oct 2 (a holiday) and restarted Oct 8 at 10:30: only Oct 8 09:00–10:30 counts.
    assert calendar.elapsed(sh(2026, 10, 2, 10), sh(2026, 10, 8, 10, 30)) == dt.timedelta(hours=1, minutes=30)
    # Counting from an instant on a holiday starts at the next working instant.
    assert local(calendar.add(sh(2026, 10, 2, 10), dt.timedelta(hours=1))) == sh(2026, 10, 8, 10)
    # An SLA of 8 business hours opened Sep 30 at 15:00, paused from Oct 1 10:00 to Oct 8 11:00: 2.5 h used
    # before the pause, none during it, so the rest (5.5 h) runs from 11:00 on Oct 8.
    opened, paused, resumed = sh(2026, 9, 30, 15), sh(2026, 10, 1, 10), sh(2026, 10, 8, 11)
    used = calendar.elapsed(opened, paused)
    assert used == dt.timedelta(hours=2, minutes=30)
    assert local(calendar.add(resumed, dt.timedelta(hours=8) - used)) == sh(2026, 10, 9, 9, 30)


def test_default_data() -> None:
    calendar = default_calendar()
    assert calendar is default_calendar()
    assert calendar.to_dict() == DEFAULT_CALENDAR_DICT
    assert json.loads(json.dumps(DEFAULT_CALENDAR_DICT)) == DEFAULT_CALENDAR_DICT
    assert {2027} == PROVISIONAL_YEARS
    for date in cn.MAKEUP_DAYS[2026]:
        assert dt.date.fromisoformat(date).weekday() >= 5, date
    assert len(cn.holidays(2026)) == 3 + 9 + 3 + 5 + 3 + 3 + 7
    assert cn.holidays(2027) == [
        "2027-01-01",
        "2027-02-05",
        "2027-02-06",
        "2027-02-07",
        "2027-02-08",
        "2027-02-09",
        "2027-02-10",
        "2027-04-05",
        "2027-05-01",
        "2027-05-02",
        "2027-05-03",
        "2027-05-04",
        "2027-06-09",
        "2027-09-15",
        "2027-10-01",
        "2027-10-02",
        "2027-10-03",
        "2027-10-04",
        "2027-10-05",
    ]
    assert not calendar.is_working(sh(2027, 2, 8, 10))  # Monday, 初三
    assert not calendar.is_working(sh(2027, 2, 10, 10))  # Wednesday, in lieu of 初一 falling on a Saturday
    assert calendar.is_working(sh(2027, 2, 11, 10))
    assert calendar.is_working(sh(2026, 1, 4, 10))  # Sunday, the make-up day of 元旦


# -- other named cases ------------------------------------------------------------------------------------------------


def night_shift() -> Calendar:
    return Calendar.from_dict(
        {
            "time_zone": "Asia/Shanghai",
            "weekly": {day: [["22:00", "06:00"]] for day in ("mon", "tue", "wed", "thu", "fri")},
            "holidays": ["2026-03-11"],
        }
    )


def test_interval_crossing_midnight() -> None:
    calendar = night_shift()
    assert calendar.intervals_on(dt.date(2026, 3, 9))[0].end == DAY + 6 * 3600
    assert calendar.is_working(sh(2026, 3, 14, 5, 59, 59))  # Saturday morning: Friday's shift
    assert not calendar.is_working(sh(2026, 3, 14, 6))
    assert not calendar.is_working(sh(2026, 3, 16, 5))  # Monday morning: Sunday has no shift
    assert calendar.is_working(sh(2026, 3, 17, 5))  # Tuesday morning: Monday's shift
    assert local(calendar.add(sh(2026, 3, 13, 23), dt.timedelta(hours=3))) == sh(2026, 3, 14, 2)
    # Wednesday Mar 11 is a holiday: its shift (into Thursday) is off, Tuesday's (into Wednesday) is not.
    assert calendar.is_working(sh(2026, 3, 11, 5))
    assert not calendar.is_working(sh(2026, 3, 11, 23))
    assert not calendar.is_working(sh(2026, 3, 12, 5))
    assert calendar.elapsed(sh(2026, 3, 10, 12), sh(2026, 3, 12, 12)) == dt.timedelta(hours=8)
    assert local(calendar.add_business_days(sh(2026, 3, 10, 12), 1)) == sh(2026, 3, 12, 12)


def test_json_round_trip_of_a_written_calendar() -> None:
    shape = {
        "time_zone": "Asia/Kolkata",
        "weekly": {
            "mon": [["13:30", "17:30:15"], ["09:00", "12:00"]],
            "fri": [["22:00", "06:00"]],
            "sat": [["10:00", "24:00"]],
        },
        "holidays": ["2026-05-01"],
        "makeup_days": ["2026-05-10"],
        "makeup_as": "mon",
    }
    calendar = Calendar.from_dict(shape)
    out = calendar.to_dict()
    assert out["weekly"]["mon"] == [["09:00", "12:00"], ["13:30", "17:30:15"]]  # sorted
    assert out["weekly"]["fri"] == [["22:00", "06:00"]]
    assert out["weekly"]["sat"] == [["10:00", "24:00"]]
    assert out["weekly"]["sun"] == []
    assert Calendar.from_dict(out) == calendar
    assert pickle.loads(pickle.dumps(calendar)) == copy.deepcopy(calendar) == calendar
    assert Calendar.from_dict({"weekly": {"mon": [["09:00", "17:00"]]}}).to_dict()["time_zone"] == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("shape", "field", "words"),
    [
        ({"weekly": {"mon": [["09:00", "12:00"], ["11:00", "13:00"]]}}, "weekly.mon[1]", "overlaps weekly.mon[0]"),
        ({"weekly": {"mon": [["22:00", "06:00"]], "tue": [["05:00", "09:00"]]}}, "weekly.tue[0]", "overlaps"),
        ({"weekly": {"sun": [["20:00", "02:00"]], "mon": [["01:00", "09:00"]]}}, "weekly.mon[0]", "overlaps"),
        ({"weekly": {"mon": [["09:00", "25:00"]]}}, "weekly.mon[0][1]", "no such time"),
        ({"weekly": {"mon": [["9:00", "12:00"]]}}, "weekly.mon[0][0]", "HH:MM"),
        ({"weekly": {"mon": [["24:00", "12:00"]]}}, "weekly.mon[0][0]", "only end"),
        ({"weekly": {"mon": [["09:00", "12:60"]]}}, "weekly.mon[0][1]", "no such time"),
        ({"weekly": {"mon": [["09:00"]]}}, "weekly.mon[0]", "[start, end]"),
        ({"weekly": {"mon": "09:00-12:00"}}, "weekly.mon", "list"),
        ({"weekly": {"monday": [["09:00", "12:00"]]}}, "weekly.monday", "unknown weekday"),
        ({"weekly": {}}, "weekly", "no working interval"),
        ({"weekly": {"mon": [["09:00", "12:00"]]}, "time_zone": "Asia/Beijing"}, "time_zone", "unknown time zone"),
        ({"weekly": {"mon": [["09:00", "12:00"]]}, "time_zone": "../etc/passwd"}, "time_zone", "unknown"),
        (
            {"weekly": {"mon": [["09:00", "12:00"]]}, "holidays": ["2026-10-01"], "makeup_days": ["2026-10-01"]},
            "makeup_days[0]",
            "also a holiday",
        ),
        ({"weekly": {"mon": [["09:00", "12:00"]]}, "holidays": ["2026-02-30"]}, "holidays[0]", "no such date"),
        ({"weekly": {"mon": [["09:00", "12:00"]]}, "holidays": ["1969-12-31"]}, "holidays[0]", "1970..2200"),
        ({"weekly": {"mon": [["09:00", "12:00"]]}, "makeup_days": ["20260104"]}, "makeup_days[0]", "YYYY-MM-DD"),
        ({"weekly": {"mon": [["09:00", "12:00"]]}, "makeup_as": "monday"}, "makeup_as", "expected one of"),
        ({"weekly": {"mon": [["09:00", "12:00"]]}, "timezone": "UTC"}, "timezone", "unknown field"),
        (
            # Thursday Jan 8 is fine; Saturday Jan 3 as Monday runs its night shift into Sunday's early interval.
            {
                "weekly": {"mon": [["22:00", "06:00"]], "sun": [["05:00", "08:00"]]},
                "makeup_days": ["2026-01-08", "2026-01-03"],
            },
            "makeup_days[1]",
            "overlaps",
        ),
    ],
)
def test_validation_names_the_field(shape: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(CalendarError) as caught:
        Calendar.from_dict(shape)
    assert caught.value.field == field, str(caught.value)
    assert words in caught.value.reason, str(caught.value)
    assert str(caught.value).startswith(f"{field}: ")
    assert isinstance(caught.value, ValueError)


def test_bad_inputs_to_the_operations() -> None:
    calendar = Calendar.from_dict(DEFAULT_CALENDAR_DICT)  # its own: the years asked about here stay with it
    naive = dt.datetime(2026, 3, 10, 10)
    calls: list[Callable[[], object]] = [
        lambda: calendar.is_working(naive),
        lambda: calendar.next_working_instant(naive),
        lambda: calendar.add(naive, dt.timedelta(hours=1)),
        lambda: calendar.elapsed(naive, sh(2026, 3, 11)),
        lambda: calendar.elapsed(sh(2026, 3, 11), naive),
        lambda: calendar.add_business_days(naive, 1),
        lambda: calendar.add(sh(2026, 3, 10), dt.timedelta(seconds=-1)),
        lambda: calendar.is_working(dt.datetime(1969, 6, 1, tzinfo=UTC)),
        lambda: calendar.add(dt.datetime(2201, 6, 1, tzinfo=UTC), dt.timedelta(hours=1)),
        lambda: calendar.add(dt.datetime(2200, 12, 31, tzinfo=SH), dt.timedelta(days=1)),
        lambda: calendar.add_business_days(dt.datetime(1970, 1, 2, tzinfo=SH), -5),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()


def test_results_are_utc_and_zero_is_identity() -> None:
    calendar = default_calendar()
    t = dt.datetime(2026, 3, 10, 10, 0, 0, 123456, tzinfo=SH)
    for result in (
        calendar.add(t, dt.timedelta(0)),
        calendar.next_working_instant(t),
        calendar.add_business_days(t, 0),
    ):
        assert result == t and result.tzinfo is UTC
    assert calendar.add(t, dt.timedelta(microseconds=1)) == t + dt.timedelta(microseconds=1)
    assert calendar.elapsed(t, t - dt.timedelta(hours=1)) == dt.timedelta(0)


def test_instants_beyond_the_expanded_years() -> None:
    calendar = Calendar.from_dict({"weekly": {d: [["09:00", "17:00"]] for d in ("mon", "tue", "wed", "thu", "fri")}})
    far = sh(2150, 6, 2, 10)  # a Tuesday, years after anything asked so far
    assert calendar.is_working(far)
    start = sh(2026, 1, 5, 9)  # a Monday
    result = calendar.add(start, dt.timedelta(hours=8 * 5 * 52 * 3))  # three years of 52 full weeks
    assert calendar.elapsed(start, result) == dt.timedelta(hours=8 * 5 * 52 * 3)
    assert local(result).year == 2028
    assert calendar.elapsed(sh(1999, 1, 4), sh(1999, 1, 11)) == dt.timedelta(hours=40)
    ten_years_back = dt.datetime.combine(dt.date(2026, 1, 5) - dt.timedelta(weeks=520), dt.time(9), tzinfo=SH)
    assert local(calendar.add_business_days(sh(2026, 1, 5, 9), -5 * 520)) == ten_years_back


def test_dst_gap_and_repeated_hour() -> None:
    # New York: 2026-03-08 02:00 jumps to 03:00; 2026-11-01 01:00–02:00 happens twice.
    ny = ZoneInfo("America/New_York")
    calendar = Calendar.from_dict(
        {"time_zone": "America/New_York", "weekly": {"sun": [["02:30", "03:30"]], "mon": [["01:30", "02:30"]]}}
    )
    gap_day = dt.date(2026, 3, 8)
    # 02:30 does not exist: the interval starts at 03:00 EDT (07:00 UTC) and lasts half an hour.
    assert calendar.next_working_instant(dt.datetime(2026, 3, 8, 1, tzinfo=ny)) == dt.datetime(
        2026, 3, 8, 7, tzinfo=UTC
    )
    assert calendar.elapsed(
        dt.datetime.combine(gap_day, dt.time(), tzinfo=ny), dt.datetime(2026, 3, 9, tzinfo=ny)
    ) == dt.timedelta(minutes=30)
    # The Monday after the repeated hour is ordinary.
    assert calendar.elapsed(dt.datetime(2026, 11, 2, tzinfo=ny), dt.datetime(2026, 11, 3, tzinfo=ny)) == dt.timedelta(
        hours=1
    )
    # Sunday Nov 1: 02:30–03:30 EST, one hour. Business days onto a gap: 02:30 on Mar 8 becomes 03:00 EDT.
    assert calendar.elapsed(dt.datetime(2026, 11, 1, tzinfo=ny), dt.datetime(2026, 11, 2, tzinfo=ny)) == dt.timedelta(
        hours=1
    )
    assert calendar.add_business_days(dt.datetime(2026, 3, 1, 2, 30, tzinfo=ny), 2) == dt.datetime(
        2026, 3, 8, 7, tzinfo=UTC
    )
    # An interval wholly inside the gap has no instant: nothing works that Sunday.
    lost = Calendar.from_dict(
        {"time_zone": "America/New_York", "weekly": {"sun": [["02:10", "02:40"]], "mon": [["09:00", "10:00"]]}}
    )
    assert lost.next_working_instant(dt.datetime(2026, 3, 8, 1, tzinfo=ny)) == dt.datetime(2026, 3, 9, 13, tzinfo=UTC)
    assert lost.elapsed(dt.datetime(2026, 3, 8, tzinfo=ny), dt.datetime(2026, 3, 9, tzinfo=ny)) == dt.timedelta(0)
    # An ambiguous start takes its first occurrence (fold=0): London repeats 01:00–02:00 on Sunday 2026-10-25.
    london = Calendar.from_dict({"time_zone": "Europe/London", "weekly": {"sun": [["01:30", "02:30"]]}})
    # 2026-10-25 01:30 happens at 00:30 UTC (BST) and again at 01:30 UTC (GMT); the interval runs to 02:30 GMT.
    assert london.next_working_instant(dt.datetime(2026, 10, 24, 12, tzinfo=UTC)) == dt.datetime(
        2026, 10, 25, 0, 30, tzinfo=UTC
    )
    assert london.elapsed(dt.datetime(2026, 10, 24, tzinfo=UTC), dt.datetime(2026, 10, 26, tzinfo=UTC)) == dt.timedelta(
        hours=2
    )


def test_first_question_early_on_new_years_day() -> None:
    # A fresh calendar's first instant is in the small hours of Jan 1: the night shift of Dec 31 (of the year
    # before, not yet expanded) is what makes it working.
    every_night = {day: [["22:00", "06:00"]] for day in WEEKDAYS}
    assert Calendar.from_dict({"weekly": every_night}).is_working(sh(2027, 1, 1, 5))
    assert Calendar.from_dict({"weekly": every_night}).elapsed(sh(2027, 1, 1), sh(2027, 1, 1, 12)) == dt.timedelta(
        hours=6
    )
    assert local(Calendar.from_dict({"weekly": every_night}).add(sh(2027, 1, 1, 5), dt.timedelta(hours=2))) == sh(
        2027, 1, 1, 23
    )
    assert local(Calendar.from_dict({"weekly": every_night}).next_working_instant(sh(2027, 1, 1, 6))) == sh(
        2027, 1, 1, 22
    )
    # The same after a later year was expanded first: Jan 1 of the year before it is not exact until its own
    # year before is expanded too.
    calendar = Calendar.from_dict({"weekly": every_night})
    assert calendar.is_working(sh(2028, 6, 1, 5))
    assert calendar.is_working(sh(2027, 1, 1, 5))
