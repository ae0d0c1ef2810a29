"""Notification rules without gRPC or a database: which events make messages, and the inbox page table."""

from __future__ import annotations

import datetime as dt

import pytest

from crm_notification.domain import (
    CUSTOMER_ASSIGNED,
    CUSTOMER_MERGED,
    customer_assigned,
    customer_merged,
    customer_reassigned,
    inbox_page,
)
from crm_platform.errors import InvalidArgument, PermissionDenied
from crm_platform.ids import new_id
from crm_testing.services import identity

NOW = dt.datetime(2025, 3, 1, 9, 30, tzinfo=dt.UTC)


def test_customer_assigned_goes_to_the_owner() -> None:
    message = customer_assigned("c1", "rm1", NOW)
    assert message is not None
    assert (message.user_id, message.kind, message.created_at, message.read) == ("rm1", CUSTOMER_ASSIGNED, NOW, False)
    assert "c1" in message.body and message.title


def test_a_customer_in_the_branch_pool_tells_nobody() -> None:
    assert customer_assigned("c1", "", NOW) is None


@pytest.mark.parametrize(
    ("survivor_owner", "duplicate_owner", "actor", "told"),
    [
        ("rm1", "rm2", "head", ["rm2", "rm1"]),  # both owners; the duplicate's first
        ("rm1", "rm2", "rm1", ["rm2"]),  # the survivor's owner merged: not told what they did
        ("rm1", "rm1", "head", ["rm1"]),  # one owner of both files: one message
        ("", "rm2", "head", ["rm2"]),  # the survivor is in the branch pool
        ("rm1", "", "head", ["rm1"]),  # the duplicate was in the branch pool
        ("", "", "head", []),
    ],
)
def test_a_merge_tells_the_owners_but_not_who_merged(
    survivor_owner: str, duplicate_owner: str, actor: str, told: list[str]
) -> None:
    messages = customer_merged("s1", "d1", survivor_owner, duplicate_owner, actor, NOW)
    assert [m.user_id for m in messages] == told
    assert all(m.kind == CUSTOMER_MERGED and "s1" in m.body and "d1" in m.body for m in messages)
    if duplicate_owner and duplicate_owner != actor and survivor_owner != duplicate_owner:
        assert ("in the care of rm1" if survivor_owner else "in the branch pool") in messages[0].body


def test_a_reassignment_tells_the_new_owner_unless_they_took_it() -> None:
    message = customer_reassigned("c1", "rm2", "rm1", "head", NOW)
    assert message is not None and (message.user_id, message.kind) == ("rm2", CUSTOMER_ASSIGNED)
    assert customer_reassigned("c1", "rm2", "rm1", "rm2", NOW) is None  # took it themselves
    assert customer_reassigned("c1", "rm1", "rm1", "head", NOW) is None  # nothing changed hands
    assert customer_reassigned("c1", "", "rm1", "head", NOW) is None  # reclaimed to the branch pool


@pytest.mark.parametrize(
    ("page_token", "bad_fields"),
    [
        ("", set()),
        (new_id(), set()),
        ("not-a-token", {"page.page_token"}),
        ("' OR 1=1 --", {"page.page_token"}),
    ],
)
def test_inbox_page_table(page_token: str, bad_fields: set[str]) -> None:
    reader = identity("rm1", permissions=("notification:read",))
    if not bad_fields:
        page = inbox_page(reader, 20, page_token, True)
        assert (page.user_id, page.limit, page.after_id, page.unread_only) == ("rm1", 20, page_token, True)
        return
    with pytest.raises(InvalidArgument) as err:
        inbox_page(reader, 20, page_token, False)
    assert {v.field for v in err.value.violations} == bad_fields


def test_reading_an_inbox_needs_the_permission() -> None:
    with pytest.raises(PermissionDenied):
        inbox_page(identity("rm1", permissions=("customer:read",)), 20, "", False)
