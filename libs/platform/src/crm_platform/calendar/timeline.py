"""A calendar laid out on the UTC time line: its intervals as sorted epoch microseconds plus a prefix sum.

Every operation of :class:`~crm_platform.calendar.model.Calendar` is one or two bisects into these arrays
(``add`` costs a few µs instead of a walk over days). The arrays are built lazily, one local year at a time,
the first time an instant of that year is asked about, and only ever grow; each growth swaps in a new
:class:`_Span` as a whole, so a reader never sees half-built arrays.

Local wall times become instants through :mod:`zoneinfo`: a wall time that does not exist (a DST gap) becomes
the first instant after the gap, an ambiguous one (the repeated hour) its first occurrence (``fold=0``). That
mapping never decreases, so intervals that do not overlap locally do not overlap in UTC either.
"""

from __future__ import annotations

import datetime as dt
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

MIN_YEAR = 1970
MAX_YEAR = 2200
DAY_SECONDS = 86_400

_UTC = dt.UTC
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=_UTC)
_ONE_US = dt.timedelta(microseconds=1)
_ONE_DAY = dt.timedelta(days=1)
_US_PER_S = 1_000_000

# The local intervals (seconds after the date's midnight) that start on a date: the calendar's raw rule.
IntervalsOn = Callable[[dt.date], tuple[tuple[int, int], ...]]


def instant_us(t: dt.datetime, name: str = "t") -> int:
    """Microseconds since the epoch of an aware datetime (``ValueError`` when naive)."""
    if not isinstance(t, dt.datetime):
        raise TypeError(f"{name} must be a datetime, not {type(t).__name__}")
    if t.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware: {t.isoformat()} has no UTC offset")
    return (t - _EPOCH) // _ONE_US


def utc_datetime(us: int) -> dt.datetime:
    """The aware UTC datetime of epoch microseconds."""
    return _EPOCH + dt.timedelta(microseconds=us)


def duration_us(duration: dt.timedelta) -> int:
    """Microseconds of a non-negative timedelta (``ValueError`` when negative)."""
    if not isinstance(duration, dt.timedelta):
        raise TypeError(f"duration must be a timedelta, not {type(duration).__name__}")
    if duration < dt.timedelta(0):
        raise ValueError(f"duration must not be negative: {duration}")
    return duration // _ONE_US


def local_to_utc_us(zone: ZoneInfo, wall: dt.datetime) -> int:
    """Epoch microseconds of a naive local wall time: fold=0 when ambiguous, the gap's end when nonexistent."""
    utc = wall.replace(tzinfo=zone, fold=0).astimezone(_UTC)
    if utc.astimezone(zone).replace(tzinfo=None) == wall:
        return (utc - _EPOCH) // _ONE_US
    # In a gap fold=0 reads the wall time with the offset before the transition (a later instant) and fold=1 with
    # the offset after it (an earlier one); the transition lies between them. Search the first instant whose wall
    # time is not before ``wall``: the local clock is monotone across a gap.
    low = (wall.replace(tzinfo=zone, fold=1).astimezone(_UTC) - _EPOCH) // _ONE_US  # wall time before ``wall``
    high = (utc - _EPOCH) // _ONE_US  # wall time after ``wall``
    while high - low > 1:
        middle = (low + high) // 2
        if utc_datetime(middle).astimezone(zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return high


def local_year(zone: ZoneInfo, us: int) -> int:
    """The local calendar year of an instant (``ValueError`` outside the supported years)."""
    # A rough UTC year first, so that an instant near year 1 or 9999 cannot overflow the conversion.
    rough = 1970 + us // _US_PER_S // (365 * DAY_SECONDS)
    if not MIN_YEAR - 2 <= rough <= MAX_YEAR + 2:
        raise ValueError(f"instant outside the calendar's years {MIN_YEAR}..{MAX_YEAR}")
    year = utc_datetime(us).astimezone(zone).year
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise ValueError(f"instant in local year {year}, outside the calendar's years {MIN_YEAR}..{MAX_YEAR}")
    return year


@dataclass(frozen=True, slots=True)
class _Span:
    """The expansion of local years ``first..last``, exact for instants in ``[low, high)``."""

    first: int
    last: int
    low: int
    high: int
    starts: list[int]  # interval starts, epoch µs, ascending
    ends: list[int]  # their ends (each interval is [start, end)), ascending too as intervals never overlap
    before: list[int]  # before[i] = working µs of intervals 0..i-1, so len(before) == len(starts) + 1
    days: list[int]  # ordinals of the working days (a date on which an interval starts), ascending


class Timeline:
    """The lazily grown expansion of one calendar; all instants are epoch microseconds."""

    def __init__(self, zone: ZoneInfo, intervals_on: IntervalsOn) -> None:
        self.zone = zone
        self._zone = zone
        self._intervals_on = intervals_on
        self._span: _Span | None = None
        self._lock = threading.Lock()

    # -- growth ---------------------------------------------------------------------------------------------------

    def _midnight_us(self, year: int, month: int = 1, day: int = 1) -> int:
        return local_to_utc_us(self._zone, dt.datetime(year, month, day))

    def _expand(self, first: int, last: int) -> tuple[list[int], list[int], list[int]]:
        """Interval starts, ends and working-day ordinals of the dates of local years ``first..last``."""
        starts: list[int] = []
        ends: list[int] = []
        days: list[int] = []
        zone = self._zone
        date = dt.date(first, 1, 1)
        stop = dt.date(last + 1, 1, 1)
        while date < stop:
            intervals = self._intervals_on(date)
            if intervals:
                days.append(date.toordinal())
                midnight = dt.datetime(date.year, date.month, date.day)
                for start, end in intervals:
                    begin = local_to_utc_us(zone, midnight + dt.timedelta(seconds=start))
                    finish = local_to_utc_us(zone, midnight + dt.timedelta(seconds=end))
                    if finish > begin:  # an interval wholly inside a DST gap has no instant at all
                        starts.append(begin)
                        ends.append(finish)
            date += _ONE_DAY
        return starts, ends, days

    def _grow(self, first: int, last: int) -> _Span:
        """The span covering at least local years ``first..last`` (clamped to the supported years)."""
        first, last = max(first, MIN_YEAR), min(last, MAX_YEAR)
        with self._lock:
            current = self._span
            if current is not None and current.first <= first and last <= current.last:
                return current
            if current is None:
                starts, ends, days = self._expand(first, last)
            else:
                starts, ends, days = list(current.starts), list(current.ends), list(current.days)
                if first < current.first:
                    head = self._expand(first, current.first - 1)
                    starts, ends, days = head[0] + starts, head[1] + ends, head[2] + days
                if last > current.last:
                    tail = self._expand(current.last + 1, last)
                    starts, ends, days = starts + tail[0], ends + tail[1], days + tail[2]
                first, last = min(first, current.first), max(last, current.last)
            before = [0] * (len(starts) + 1)
            total = 0
            for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
                total += end - start
                before[i + 1] = total
            # An interval of 31 December of the year before ``first`` may reach into 1 January, so that day is
            # exact only once the year before is expanded too; before 1970 there are no intervals by definition.
            low = self._midnight_us(first, 1, 2) if first > MIN_YEAR else self._midnight_us(MIN_YEAR)
            high = self._midnight_us(last + 1)
            span = _Span(first, last, low, high, starts, ends, before, days)
            self._span = span
            return span

    def covering(self, us: int) -> _Span:
        """A span exact at instant ``us`` (expanding its local year and the year before when needed)."""
        span = self._span
        if span is not None and span.low <= us < span.high:
            return span
        year = local_year(self._zone, us)
        return self._grow(year - 1, year)

    def covering_year(self, year: int) -> _Span:
        """A span holding every working day of local ``year``."""
        if not MIN_YEAR <= year <= MAX_YEAR:
            raise ValueError(f"year {year} outside the calendar's years {MIN_YEAR}..{MAX_YEAR}")
        span = self._span
        if span is not None and span.first <= year <= span.last:
            return span
        return self._grow(year, year)

    def _later(self, span: _Span) -> _Span:
        if span.last >= MAX_YEAR:
            raise ValueError(f"no working time left before the end of {MAX_YEAR}")
        return self._grow(span.first, span.last + 1)

    def _earlier(self, span: _Span) -> _Span:
        if span.first <= MIN_YEAR:
            raise ValueError(f"no working day left after the start of {MIN_YEAR}")
        return self._grow(span.first - 1, span.last)

    # -- queries --------------------------------------------------------------------------------------------------

    @staticmethod
    def _worked_before(span: _Span, us: int) -> int:
        """Working µs from the span's first interval up to ``us``: the prefix sum at an instant."""
        i = bisect_right(span.starts, us) - 1
        if i < 0:
            return 0
        end = span.ends[i]
        return span.before[i] + (us if us < end else end) - span.starts[i]

    def is_working(self, us: int) -> bool:
        """Whether ``us`` lies in an interval (start inclusive, end exclusive)."""
        span = self.covering(us)
        i = bisect_right(span.starts, us) - 1
        return i >= 0 and us < span.ends[i]

    def next_working(self, us: int) -> int:
        """``us`` when working, else the start of the next interval."""
        span = self.covering(us)
        while True:
            i = bisect_right(span.starts, us) - 1
            if i >= 0 and us < span.ends[i]:
                return us
            if i + 1 < len(span.starts):
                return span.starts[i + 1]
            span = self._later(span)

    def elapsed(self, a: int, b: int) -> int:
        """Working µs in ``[a, b)`` (0 when ``b <= a``)."""
        if b <= a:
            return 0
        self.covering(a)
        span = self.covering(b)  # spans only grow, so this one covers ``a`` too
        return self._worked_before(span, b) - self._worked_before(span, a)

    def add(self, us: int, duration: int) -> int:
        """The earliest instant ``r >= us`` with ``duration`` working µs in ``[us, r)``."""
        if duration == 0:
            return us
        span = self.covering(us)
        while True:
            target = self._worked_before(span, us) + duration
            before = span.before
            k = bisect_left(before, target, 1)
            if k < len(before):
                # Interval k-1 holds the instant at which the prefix sum reaches ``target``.
                return span.ends[k - 1] - (before[k] - target)
            span = self._later(span)

    def add_working_days(self, date: dt.date, n: int) -> dt.date:
        """The ``n``-th working day after ``date`` (before it when ``n < 0``); ``date`` itself when ``n == 0``."""
        if n == 0:
            return date
        ordinal = date.toordinal()
        span = self.covering_year(date.year)
        while True:
            if n > 0:
                k = bisect_right(span.days, ordinal) + n - 1
                if k < len(span.days):
                    return dt.date.fromordinal(span.days[k])
                span = self._later(span)
            else:
                k = bisect_left(span.days, ordinal) + n
                if k >= 0:
                    return dt.date.fromordinal(span.days[k])
                span = self._earlier(span)
