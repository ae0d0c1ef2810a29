"""The organisation re-announced: every branch, team, user, staff contact and calendar once per run, in batches;
weekly through the scheduled item ``org-announce``, run once across replicas."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from crm.identity.v1 import events_pb2
from crm_gateway.announcement import ACTOR, KEY, Announcer, WeeklyAnnouncement
from crm_gateway.app import prepare_database
from crm_gateway.calendars import BusinessCalendars
from crm_gateway.config import Settings
from crm_gateway.organisation import Organisation
from crm_gateway.policy import Policy
from crm_gateway.staff_contacts import StaffContacts
from crm_platform.auth_context import Identity
from crm_platform.calendar import default_calendar_dict
from crm_platform.config import load
from crm_platform.db import create_engine, resolve_database_url, session_factory
from crm_platform.outbox import Outbox
from crm_platform.pii import StaffContact, open_staff_contact, staff_contact_key
from crm_platform.schedule import PENDING, Scheduler, ScheduleRunner, scheduled_items
from gateway_harness import Gateway, outbox_events

USERS = {f"u-{u}" for u in ("admin", "auditor", "exec", "head", "lead1", "rm1", "rm2", "rm3", "teller1", "lobby")}
USERS |= {"u-head2", "u-rm4"}
EXPECTED = {
    ("crm.identity.branch.announced", events_pb2.BranchChanged): {"BJ001", "SH001"},
    ("crm.identity.team.announced", events_pb2.TeamChanged): {"T1", "T2", "T3"},
    ("crm.identity.user.announced", events_pb2.UserChanged): USERS,
    ("crm.identity.user.contact_changed", events_pb2.StaffContactChanged): {"u-rm1"},
    ("crm.identity.calendar.announced", events_pb2.CalendarChanged): {"default", "BJ001"},
}


@pytest.fixture
async def organisation(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Settings, AsyncEngine]]:
    """The demo organisation, plus a staff contact, the bank-wide calendar and a branch's own, in a fresh
    database; no gateway running."""
    settings = load(Settings, {"CRM_DATA_DIR": str(tmp_path), "GATEWAY_DATABASE_URL": db_url, "CRM_DEMO": "1"})
    engine = await prepare_database(settings)
    sessions, outbox, admin = session_factory(engine), Outbox("identity"), Identity("u-admin")
    contacts = StaffContacts(settings.keyring(), settings.staff_contact_key)
    await Organisation(sessions, outbox, Policy.load(), contacts).update_user(
        admin, "u-rm1", None, None, None, email="rm1@bank.example.cn", mobile="13800138000"
    )
    calendars = BusinessCalendars(sessions, outbox)
    await calendars.replace(admin, "", default_calendar_dict(), 0)
    saturday = {**default_calendar_dict(), "weekly": {"sat": [["09:00", "15:00"]]}}
    await calendars.replace(admin, "BJ001", saturday, 0)
    try:
        yield settings, engine
    finally:
        await engine.dispose()


async def _announced(engine: AsyncEngine) -> dict[str, list[tuple[str, Any]]]:
    """Subject → (subject id, payload) of every event the announcement wrote."""
    found: dict[str, list[tuple[str, Any]]] = {}
    for subject, kind in EXPECTED:
        events = await outbox_events(engine, subject, kind)
        found[subject] = [(e.subject_id, m) for e, m in events if e.actor == ACTOR]
    return found


def _assert_each_entity_once(announced: dict[str, list[tuple[str, Any]]]) -> None:
    for (subject, _), ids in EXPECTED.items():
        got = Counter(subject_id for subject_id, _ in announced[subject])
        assert set(got) == ids and set(got.values()) == {1}, (subject, got)


async def test_announce_publishes_every_entity_once_in_batches(organisation: tuple[Settings, AsyncEngine]) -> None:
    settings, engine = organisation
    contacts = StaffContacts(settings.keyring(), settings.staff_contact_key)
    # Batches of 5 so that batches span tables and one ends exactly at a table's end (2 branches + 3 teams).
    counts = await Announcer(Outbox("identity"), contacts, batch_size=5).announce_all(session_factory(engine))
    assert counts == Counter(branches=2, teams=3, users=12, contacts=1, calendars=2)
    announced = await _announced(engine)
    _assert_each_entity_once(announced)

    facts = {subject: dict(pairs) for subject, pairs in announced.items()}
    assert facts["crm.identity.branch.announced"]["BJ001"].head_id == "u-head"
    assert facts["crm.identity.team.announced"]["T1"].lead_id == "u-lead1"
    rm1 = facts["crm.identity.user.announced"]["u-rm1"]
    assert (rm1.team_id, rm1.region, list(rm1.roles)) == ("T1", "north", ["rm"])
    sealed = facts["crm.identity.user.contact_changed"]["u-rm1"].sealed
    opened = open_staff_contact(staff_contact_key(settings.staff_contact_key), "u-rm1", sealed)
    assert opened == StaffContact("rm1@bank.example.cn", "13800138000")
    branch_calendar = facts["crm.identity.calendar.announced"]["BJ001"]
    assert branch_calendar.version == 1 and [i.weekday for i in branch_calendar.calendar.weekly] == ["sat"]

    # A second run announces everything once more (the consumers keep the newest fact: harmless).
    await Announcer(Outbox("identity"), contacts).announce_all(session_factory(engine))
    again = await _announced(engine)
    assert all(len(again[subject]) == 2 * len(announced[subject]) for subject in announced)


def _replica(engine: AsyncEngine, contacts: StaffContacts) -> tuple[ScheduleRunner, WeeklyAnnouncement]:
    """One gateway replica's runner and announcement, as app.py wires them (batches of 4 here)."""
    runner: ScheduleRunner
    weekly = WeeklyAnnouncement(
        Announcer(Outbox("identity"), contacts, batch_size=4), Scheduler(notify=lambda due_at: runner.notice(due_at))
    )
    runner = ScheduleRunner(engine, {"org-announce": weekly.run}, poll_interval=0.05)
    return runner, weekly


async def test_the_weekly_run_happens_once_across_replicas(organisation: tuple[Settings, AsyncEngine]) -> None:
    settings, engine = organisation
    url = resolve_database_url("gateway", settings.database_url, settings.postgres_url, settings.data_dir)
    replicas = [create_engine(url) for _ in range(2)]
    contacts = StaffContacts(settings.keyring(), settings.staff_contact_key)
    runners: list[ScheduleRunner] = []
    for replica in replicas:
        runner, weekly = _replica(replica, contacts)
        runners.append(runner)
        assert await weekly.ensure(session_factory(replica)) is (replica is replicas[0])  # the second finds it
    started = dt.datetime.now(dt.UTC)
    for runner in runners:
        runner.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            async with engine.connect() as conn:
                item = (await conn.execute(select(scheduled_items).where(scheduled_items.c.key == KEY))).one()
            if item.payload == "{}" and item.version > 1:
                break
            assert time.monotonic() < deadline, "the announcement did not finish"
            await asyncio.sleep(0.05)
    finally:
        for runner in runners:
            await runner.stop()
        for replica in replicas:
            await replica.dispose()
    _assert_each_entity_once(await _announced(engine))
    # Then the next run is due a week after this one began.
    assert item.status == PENDING and item.kind == "org-announce"
    due = item.due_at if item.due_at.tzinfo else item.due_at.replace(tzinfo=dt.UTC)
    assert started + dt.timedelta(days=7) - dt.timedelta(minutes=1) < due < started + dt.timedelta(days=7, minutes=1)


async def test_the_gateway_schedules_and_runs_the_announcement_at_its_first_start(gateway: Gateway) -> None:
    engine = gateway.app.state.engine
    deadline = time.monotonic() + 15
    while True:
        announced = await outbox_events(engine, "crm.identity.team.announced", events_pb2.TeamChanged)
        async with engine.connect() as conn:
            item = (await conn.execute(select(scheduled_items).where(scheduled_items.c.key == KEY))).one()
        if {m.team_id for _, m in announced} == {"T1", "T2", "T3"} and item.payload == "{}" and item.version > 1:
            break
        assert time.monotonic() < deadline, "the organisation was not announced after the start"
        await asyncio.sleep(0.05)
    assert item.status == PENDING
    due = item.due_at if item.due_at.tzinfo else item.due_at.replace(tzinfo=dt.UTC)
    assert due > dt.datetime.now(dt.UTC) + dt.timedelta(days=6)
