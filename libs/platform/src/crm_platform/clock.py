"""The current time, read in one place, and clocks that can be injected.

Code that decides by the time (what is due, how long a back-off lasts) takes a :class:`Clock`, so that a test
moves time with a :class:`ManualClock` instead of sleeping. :func:`utcnow` is where the process reads the wall
clock; :class:`SystemClock` is that as a :class:`Clock`.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


class Clock(Protocol):
    """A source of the current time."""

    def now(self) -> dt.datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The wall clock (:func:`utcnow`)."""

    def now(self) -> dt.datetime:
        """The current time, timezone-aware UTC."""
        return utcnow()


def _aware_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("a naive datetime: give the time zone (UTC)")
    return value.astimezone(dt.UTC)


class ManualClock:
    """A clock that stands still until told to move (tests)."""

    def __init__(self, start: dt.datetime) -> None:
        self._now = _aware_utc(start)

    def now(self) -> dt.datetime:
        """The time this clock was last set or advanced to."""
        return self._now

    def advance(self, delta: dt.timedelta) -> dt.datetime:
        """Move forward by ``delta``; return the new time."""
        if delta < dt.timedelta(0):
            raise ValueError("a clock does not go backwards: use set() to put it back on purpose")
        self._now += delta
        return self._now

    def set(self, when: dt.datetime) -> None:
        """Set the time to ``when`` (aware; any direction)."""
        self._now = _aware_utc(when)
