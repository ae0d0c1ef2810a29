"""Business calendars as organisation data: the built-in default, inheritance, validation naming the calendar's
field path, optimistic concurrency with If-Match, and the crm.identity.calendar.updated events."""

from __future__ import annotations

import copy
from typing import Any

from crm.identity.v1 import events_pb2
from crm_platform.calendar import default_calendar_dict
from crm_platform.org import calendar_from_proto
from gateway_harness import Gateway, outbox_events

SATURDAY_BRANCH: dict[str, Any] = {
    "time_zone": "Asia/Shanghai",
    "weekly": {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat")},
    "holidays": ["2026-10-01"],
    "makeup_days": [],
    "makeup_as": "mon",
}


async def _calendar_events(gateway: Gateway) -> list[events_pb2.CalendarChanged]:
    found = await outbox_events(gateway.app.state.engine, "crm.identity.calendar.updated", events_pb2.CalendarChanged)
    return [message for _, message in found]


async def test_the_built_in_default_is_answered_until_one_is_stored_and_branches_inherit(gateway: Gateway) -> None:
    admin = await gateway.bearer("admin")
    bank = await gateway.client.get("/api/v1/admin/calendar", headers=admin)
    assert bank.status_code == 200 and bank.headers["etag"] == '"0"'
    body = bank.json()
    assert body["version"] == 0 and body["source"] == "built_in" and body["inherited"] is False
    assert body["calendar"] == default_calendar_dict()
    branch = (await gateway.client.get("/api/v1/admin/branches/BJ001/calendar", headers=admin)).json()
    assert branch["inherited"] is True and branch["source"] == "built_in" and branch["version"] == 0
    assert branch["calendar"] == default_calendar_dict()
    assert (await gateway.client.get("/api/v1/admin/branches/NOPE/calendar", headers=admin)).status_code == 404
    # Calendars are the administrator's: a branch head may not change them.
    head = await gateway.bearer("head")
    assert (await gateway.client.get("/api/v1/admin/calendar", headers=head)).status_code == 403

    # A stored default: branches without their own follow it.
    shorter = copy.deepcopy(default_calendar_dict())
    shorter["weekly"]["fri"] = [["09:00", "12:00"]]
    put = await gateway.client.put("/api/v1/admin/calendar", json=shorter, headers={**admin, "If-Match": '"0"'})
    assert put.status_code == 200, put.text
    assert put.headers["etag"] == '"1"' and put.json()["source"] == "bank_default" and put.json()["version"] == 1
    assert put.json()["updated_by"] == "u-admin" and put.json()["updated_at"]
    inherited = (await gateway.client.get("/api/v1/admin/branches/SH001/calendar", headers=admin)).json()
    assert inherited["inherited"] is True and inherited["source"] == "bank_default"
    assert inherited["calendar"]["weekly"]["fri"] == [["09:00", "12:00"]]

    (event,) = await _calendar_events(gateway)
    assert event.branch_id == "" and event.version == 1 and event.HasField("calendar")
    assert calendar_from_proto(event.calendar)["weekly"]["fri"] == [["09:00", "12:00"]]


async def test_put_validates_the_calendar_and_needs_the_current_version(gateway: Gateway) -> None:
    admin = await gateway.bearer("admin")
    url = "/api/v1/admin/branches/BJ001/calendar"
    missing = await gateway.client.put(url, json=SATURDAY_BRANCH, headers=admin)
    assert missing.status_code == 428
    stale = await gateway.client.put(url, json=SATURDAY_BRANCH, headers={**admin, "If-Match": '"3"'})
    assert stale.status_code == 412
    garbage = await gateway.client.put(url, json=SATURDAY_BRANCH, headers={**admin, "If-Match": "yesterday"})
    assert garbage.status_code == 412

    overlapping = copy.deepcopy(SATURDAY_BRANCH)
    overlapping["weekly"]["mon"] = [["09:00", "12:00"], ["11:30", "17:30"]]
    bad = await gateway.client.put(url, json=overlapping, headers={**admin, "If-Match": '"0"'})
    assert bad.status_code == 422, bad.text
    assert [e["field"] for e in bad.json()["errors"]] == ["weekly.mon[1]"]
    for field, value, path in [
        ("time_zone", "Mars/Olympus", "time_zone"),
        ("holidays", ["2026-02-30"], "holidays[0]"),
        ("makeup_as", "someday", "makeup_as"),
    ]:
        reply = await gateway.client.put(
            url, json={**SATURDAY_BRANCH, field: value}, headers={**admin, "If-Match": "0"}
        )
        assert reply.status_code == 422 and reply.json()["errors"][0]["field"] == path, reply.text
    assert await _calendar_events(gateway) == []  # nothing refused was stored or announced

    own = await gateway.client.put(url, json=SATURDAY_BRANCH, headers={**admin, "If-Match": '"0"'})
    assert own.status_code == 200, own.text
    assert own.json()["source"] == "branch" and own.json()["inherited"] is False and own.headers["etag"] == '"1"'
    assert own.json()["calendar"] == SATURDAY_BRANCH  # stored and served as written
    lost_update = await gateway.client.put(url, json=SATURDAY_BRANCH, headers={**admin, "If-Match": '"0"'})
    assert lost_update.status_code == 412
    sunday = {**SATURDAY_BRANCH, "holidays": []}
    second = await gateway.client.put(url, json=sunday, headers={**admin, "If-Match": '"1"'})
    assert second.status_code == 200 and second.json()["version"] == 2
    # The other branch still inherits the (built-in) default.
    assert (await gateway.client.get("/api/v1/admin/branches/SH001/calendar", headers=admin)).json()["inherited"]

    events = await _calendar_events(gateway)
    assert [(e.branch_id, e.version, list(e.calendar.holidays)) for e in events] == [
        ("BJ001", 1, ["2026-10-01"]),
        ("BJ001", 2, []),
    ]
    assert calendar_from_proto(events[0].calendar) == SATURDAY_BRANCH


async def test_delete_returns_a_branch_to_the_default_and_versions_keep_counting(gateway: Gateway) -> None:
    admin = await gateway.bearer("admin")
    url = "/api/v1/admin/branches/BJ001/calendar"
    assert (await gateway.client.delete(url, headers=admin)).status_code == 404  # nothing of its own yet
    await gateway.client.put(url, json=SATURDAY_BRANCH, headers={**admin, "If-Match": '"0"'})
    assert (await gateway.client.delete(url, headers={**admin, "If-Match": '"7"'})).status_code == 412
    removed = await gateway.client.delete(url, headers={**admin, "If-Match": '"1"'})
    assert removed.status_code == 200, removed.text
    body = removed.json()
    assert body["inherited"] is True and body["source"] == "built_in" and body["version"] == 2
    assert body["calendar"] == default_calendar_dict() and removed.headers["etag"] == '"2"'
    assert (await gateway.client.delete(url, headers=admin)).status_code == 404

    # Given again, it continues from the removal's version, so the services order the changes right.
    again = await gateway.client.put(url, json=SATURDAY_BRANCH, headers={**admin, "If-Match": '"2"'})
    assert again.status_code == 200 and again.json()["version"] == 3

    events = await _calendar_events(gateway)
    assert [(e.branch_id, e.version, e.HasField("calendar")) for e in events] == [
        ("BJ001", 1, True),
        ("BJ001", 2, False),
        ("BJ001", 3, True),
    ]
