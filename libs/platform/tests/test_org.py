"""The org directory (SQLite and PostgreSQL): identity events fill users, teams, branches and calendars; the
questions services ask answer from it; a user's team move carries their customers along in the customer
directory; an older fact never overwrites a newer one."""

from __future__ import annotations

import datetime as dt

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import select

from crm.common.v1 import envelope_pb2
from crm.identity.v1 import events_pb2
from crm_platform.calendar import default_calendar
from crm_platform.db import create_engine, normalise_url, session_factory
from crm_platform.directory import create_directory_table, customer_directory, upsert
from crm_platform.inbox import Event
from crm_platform.org import OrgDirectory, calendar_to_proto, create_org_tables, org_subscription

T0 = dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC)
ORG = OrgDirectory()


def _event(subject: str, payload: object, at: dt.datetime) -> Event:
    return Event("e-" + subject, subject, "identity", "", "admin", at, payload, envelope_pb2.EventEnvelope())  # type: ignore[arg-type]


def _user(user_id: str, team: str, roles: tuple[str, ...], status: str = "active") -> events_pb2.UserChanged:
    return events_pb2.UserChanged(
        user_id=user_id,
        username=user_id.removeprefix("u-"),
        display_name=user_id,
        branch_id="BJ001",
        team_id=team,
        region="north",
        roles=list(roles),
        status=status,
    )


async def test_the_org_directory_answers_from_identity_events(db_url: str) -> None:
    engine = create_engine(normalise_url(db_url))
    try:
        async with engine.begin() as conn:

            def create(sync: object) -> None:
                op = Operations(MigrationContext.configure(sync))  # type: ignore[arg-type]
                create_org_tables(op)
                create_directory_table(op)

            await conn.run_sync(create)
        handlers = org_subscription("test").handlers
        sessions = session_factory(engine)

        async def apply(subject: str, payload: object, at: dt.datetime) -> None:
            async with sessions() as session, session.begin():
                await handlers[subject](session, _event(subject, payload, at))

        await apply("crm.identity.branch.created", events_pb2.BranchChanged(branch_id="BJ001", region="north"), T0)
        await apply(
            "crm.identity.branch.updated",
            events_pb2.BranchChanged(branch_id="BJ001", name="北京分行营业部", region="north", head_id="u-head"),
            T0 + dt.timedelta(minutes=1),
        )
        for team, lead in (("T1", "u-lead1"), ("T2", "")):
            await apply(
                "crm.identity.team.created",
                events_pb2.TeamChanged(team_id=team, branch_id="BJ001", name=team, lead_id=lead),
                T0,
            )
        for user, team, roles in (
            ("u-rm1", "T1", ("rm",)),
            ("u-rm2", "T1", ("rm",)),
            ("u-lead1", "T1", ("team_lead",)),
            ("u-head", "", ("branch_head", "rm")),
        ):
            await apply("crm.identity.user.created", _user(user, team, roles), T0)
        await apply("crm.identity.user.disabled", _user("u-rm2", "T1", ("rm",), "disabled"), T0)

        async with sessions() as session:
            assert await ORG.lead_of(session, "u-rm1") == "u-lead1"
            assert await ORG.head_of(session, "BJ001") == "u-head"
            assert [u.user_id for u in await ORG.members(session, team_id="T1", role="rm")] == ["u-rm1"]
            assert [u.user_id for u in await ORG.members(session, branch_id="BJ001", role="rm")] == ["u-head", "u-rm1"]
            assert not (await ORG.user(session, "u-rm2")).active  # type: ignore[union-attr]
            # No calendar announced: the built-in one.
            assert await ORG.calendar(session, "BJ001") is default_calendar()

        # The bank-wide calendar, then a branch's own; a late, older version changes nothing.
        bank = default_calendar().to_dict()
        branch = {**bank, "weekly": {**bank["weekly"], "sat": [["09:00", "12:00"]]}}
        await apply(
            "crm.identity.calendar.updated",
            events_pb2.CalendarChanged(branch_id="", calendar=calendar_to_proto(bank), version=1),
            T0,
        )
        await apply(
            "crm.identity.calendar.updated",
            events_pb2.CalendarChanged(branch_id="BJ001", calendar=calendar_to_proto(branch), version=2),
            T0,
        )
        await apply(
            "crm.identity.calendar.updated",
            events_pb2.CalendarChanged(branch_id="BJ001", calendar=calendar_to_proto(bank), version=1),
            T0,
        )
        saturday = dt.datetime(2026, 12, 5, 2, 30, tzinfo=dt.UTC)  # 10:30 in Beijing
        async with sessions() as session:
            assert (await ORG.calendar(session, "BJ001")).is_working(saturday)
            assert not (await ORG.calendar(session, "SH001")).is_working(saturday)  # inherits the bank's
            assert (await ORG.calendar_of_user(session, "u-rm1")).is_working(saturday)
        # Removed: the branch inherits the bank-wide calendar again.
        await apply("crm.identity.calendar.updated", events_pb2.CalendarChanged(branch_id="BJ001", version=3), T0)
        async with sessions() as session:
            assert not (await ORG.calendar(session, "BJ001")).is_working(saturday)

        # rm1 owns two customers; moving to T2 moves them in the customer directory too.
        async with sessions() as session, session.begin():
            for customer in ("c1", "c2"):
                await upsert(
                    session,
                    customer_id=customer,
                    owner_id="u-rm1",
                    team_id="T1",
                    branch_id="BJ001",
                    region="north",
                    as_of=T0,
                )
        await apply("crm.identity.user.updated", _user("u-rm1", "T2", ("rm",)), T0 + dt.timedelta(hours=1))
        # A late redelivery of the older fact (team T1) changes neither the user nor the customers.
        await apply("crm.identity.user.updated", _user("u-rm1", "T1", ("rm",)), T0 + dt.timedelta(minutes=30))
        async with sessions() as session:
            teams = dict(
                (await session.execute(select(customer_directory.c.customer_id, customer_directory.c.team_id))).all()
            )
            assert teams == {"c1": "T2", "c2": "T2"}
            assert (await ORG.user(session, "u-rm1")).team_id == "T2"  # type: ignore[union-attr]
            assert await ORG.lead_of(session, "u-rm1") == ""  # T2 has no lead named
    finally:
        await engine.dispose()


async def test_staff_contacts_are_kept_sealed_and_open_with_the_key(db_url: str) -> None:
    from alembic.migration import MigrationContext as Context

    from crm_platform.org import create_staff_contact_tables, remember_staff_contact, staff_contact, staff_contacts
    from crm_platform.pii import PiiKeyError, StaffContact, seal_staff_contact, staff_contact_key

    key = staff_contact_key("a-key-only-gateway-and-notification-hold")
    engine = create_engine(normalise_url(db_url))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: create_staff_contact_tables(Operations(Context.configure(sync))))
        sessions = session_factory(engine)
        newer = seal_staff_contact(key, "u-rm1", StaffContact("rm1@bank.example", "13800138000"))
        older = seal_staff_contact(key, "u-rm1", StaffContact("old@bank.example", "13900139000"))
        async with sessions() as session, session.begin():
            await remember_staff_contact(session, "u-rm1", newer, T0 + dt.timedelta(minutes=5))
            await remember_staff_contact(session, "u-rm1", older, T0)  # a late, older event changes nothing
        async with sessions() as session:
            assert await staff_contact(session, key, "u-rm1") == StaffContact("rm1@bank.example", "13800138000")
            assert await staff_contact(session, key, "u-rm2") is None
            stored = (await session.execute(select(staff_contacts.c.sealed))).scalar_one()
            assert b"rm1@bank.example" not in stored
            with pytest.raises(PiiKeyError):  # another key (any other service's) opens nothing
                await staff_contact(session, staff_contact_key("another key"), "u-rm1")
    finally:
        await engine.dispose()
