"""Business calendars of bank branches, exact to the microsecond: working intervals, holidays, make-up days.

``crm_platform.calendar.default_calendar()`` is mainland China's (Asia/Shanghai, Mon–Fri 09:00–12:00 and
13:30–17:30, the holidays of 2026 and a provisional 2027); a branch's own comes from the JSON shape through
:meth:`Calendar.from_dict`. SLA deadlines are :meth:`Calendar.add`, time on the clock :meth:`Calendar.elapsed`;
a pause is the elapsed time before it, added again from where the clock restarts.

This package is named like the standard library's ``calendar`` but shadows nothing: it is only ever imported
as ``crm_platform.calendar``, and its own modules use absolute imports.
"""

from crm_platform.calendar.mainland_china import (
    DEFAULT_CALENDAR_DICT,
    PROVISIONAL_YEARS,
    default_calendar,
    default_calendar_dict,
)
from crm_platform.calendar.model import WEEKDAYS, Calendar, CalendarError, Interval
from crm_platform.calendar.timeline import MAX_YEAR, MIN_YEAR

__all__ = [
    "DEFAULT_CALENDAR_DICT",
    "MAX_YEAR",
    "MIN_YEAR",
    "PROVISIONAL_YEARS",
    "WEEKDAYS",
    "Calendar",
    "CalendarError",
    "Interval",
    "default_calendar",
    "default_calendar_dict",
]
