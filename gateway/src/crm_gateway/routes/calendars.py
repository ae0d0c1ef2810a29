"""``/api/v1/admin/calendar`` and ``/api/v1/admin/branches/{id}/calendar``: business calendars (permission
``admin:calendars``).

The body of a PUT is the calendar's JSON shape itself (see :mod:`crm_platform.calendar`), so a 422 names the
calendar's own field path (``weekly.mon[1]``). Changes need ``If-Match`` with the ``ETag`` read (the version):
428 without it, 412 when the calendar changed meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, Any

from litestar import Request, Response, delete, get, put
from litestar.exceptions import HTTPException
from litestar.params import Parameter

from crm_gateway.calendars import BANK_DEFAULT, BusinessCalendars
from crm_gateway.schemas.admin import CalendarOut
from crm_gateway.schemas.preconditions import IfMatch, optional_version, required_version
from crm_platform.errors import Conflict

CALENDARS = {"permission": "admin:calendars"}
_Code = Annotated[str, Parameter(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]


def _calendars(request: Request[Any, Any, Any]) -> BusinessCalendars:
    return request.app.state.calendars


def _actor(request: Request[Any, Any, Any]) -> Any:
    return request.scope["state"]["identity"]


async def _answer(view: Awaitable[dict[str, Any]]) -> Response[CalendarOut]:
    try:
        out = CalendarOut.of(await view)
    except Conflict:
        raise HTTPException(status_code=412, detail="If-Match does not match the calendar's ETag") from None
    return Response(out, headers={"ETag": f'"{out.version}"'})


@get("/api/v1/admin/calendar", opt=CALENDARS)
async def get_bank_calendar(request: Request[Any, Any, Any]) -> Response[CalendarOut]:
    """The bank-wide default calendar: the stored one, else the built-in mainland one (``version`` 0,
    ``source`` ``built_in``)."""
    return await _answer(_calendars(request).bank_default())


@put("/api/v1/admin/calendar", opt=CALENDARS, status_code=200)
async def put_bank_calendar(
    request: Request[Any, Any, Any], data: dict[str, Any], if_match: IfMatch = None
) -> Response[CalendarOut]:
    """Replace the bank-wide default (every branch without its own follows it)."""
    expected = required_version(if_match, "the calendar")
    return await _answer(_calendars(request).replace(_actor(request), BANK_DEFAULT, data, expected))


@get("/api/v1/admin/branches/{branch_id:str}/calendar", opt=CALENDARS)
async def get_branch_calendar(request: Request[Any, Any, Any], branch_id: _Code) -> Response[CalendarOut]:
    """The calendar in force at a branch: its own, else the inherited default (``inherited`` true)."""
    return await _answer(_calendars(request).of_branch(branch_id))


@put("/api/v1/admin/branches/{branch_id:str}/calendar", opt=CALENDARS, status_code=200)
async def put_branch_calendar(
    request: Request[Any, Any, Any], branch_id: _Code, data: dict[str, Any], if_match: IfMatch = None
) -> Response[CalendarOut]:
    """Give a branch a calendar of its own (``If-Match: "0"`` for the first)."""
    expected = required_version(if_match, "the calendar")
    return await _answer(_calendars(request).replace(_actor(request), branch_id, data, expected))


@delete("/api/v1/admin/branches/{branch_id:str}/calendar", opt=CALENDARS, status_code=200)
async def delete_branch_calendar(
    request: Request[Any, Any, Any], branch_id: _Code, if_match: IfMatch = None
) -> Response[CalendarOut]:
    """Remove a branch's own calendar: it inherits the default again (answered). ``If-Match`` optional: 412 when
    given and stale; 404 when the branch has no calendar of its own."""
    expected = optional_version(if_match, "the calendar")
    return await _answer(_calendars(request).remove(_actor(request), branch_id, expected))


ROUTES = [get_bank_calendar, put_bank_calendar, get_branch_calendar, put_branch_calendar, delete_branch_calendar]
