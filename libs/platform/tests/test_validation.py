"""The shared text, JSON, protobuf and range checks every edge applies to hostile input (issue 29)."""

from __future__ import annotations

import datetime as dt

import pytest

from crm.customer.v1 import customer_service_pb2 as pb
from crm_platform.errors import InvalidArgument
from crm_platform.paging import after_id
from crm_platform.validation import (
    MAX_JSON_DEPTH,
    Violations,
    json_violations,
    message_violations,
    require_valid_message,
    text_problem,
)


@pytest.mark.parametrize("text", ["a\x00b", "\x1b[31m", "a\x7f", "a\u0085", "a\x08", "\ud800"])
def test_control_characters_and_lone_surrogates_are_no_text(text: str) -> None:
    assert text_problem(text) is not None
    assert text_problem(text, multiline=True) is not None


def test_tab_and_newlines_only_in_free_text() -> None:
    for text in ("a\tb", "line\nline", "crlf\r\n"):
        assert text_problem(text) is not None
        assert text_problem(text, multiline=True) is None
    assert text_problem("李明 Ünïcode ☃ 👩‍👩‍👧") is None


def test_a_problem_names_the_code_point_never_the_value() -> None:
    problem = text_problem("secret\x00name")
    assert problem is not None and "U+0000" in problem and "secret" not in problem


def test_json_violations_name_each_field_by_path() -> None:
    document = {"name": "a\x00", "holdings": [{"product_code": "ok"}, {"product_code": "\x1b"}], "note": "a\nb"}
    found = {v.field for v in json_violations(document)}
    assert found == {"name", "holdings[1].product_code"}


def test_json_keys_numbers_and_depth() -> None:
    assert [v.field for v in json_violations({"k\x00": 1})] == ["body"]
    assert [v.field for v in json_violations({"n": 10**30, "f": float("inf"), "ok": 2**63 - 1})] == ["n", "f"]
    deep: object = "x"
    for _ in range(MAX_JSON_DEPTH + 5):
        deep = [deep]
    assert [v.field for v in json_violations({"filter": deep})] == ["filter"]
    shallow: object = "x"
    for _ in range(MAX_JSON_DEPTH - 1):
        shallow = [shallow]
    assert json_violations(shallow) == []


def test_message_violations_walk_nested_and_repeated_fields() -> None:
    message = pb.CreateCustomerRequest(name="a\x00")
    message.profile.occupation = "x\x07"
    message.profile.interests.extend(["ok", "bad\x1b"])
    found = {v.field for v in message_violations(message)}
    assert found == {"name", "profile.occupation", "profile.interests[1]"}
    with pytest.raises(InvalidArgument):
        require_valid_message(message)
    require_valid_message(pb.CreateCustomerRequest(name="李明", request_id="r-1"))


def test_require_text_is_single_line_unless_multiline() -> None:
    v = Violations()
    v.require_text("name", "a\tb", max_length=10)
    v.require_text("note", "a\nb", max_length=10, multiline=True)
    assert [x.field for x in v.items] == ["name"]


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00", "2026-01-01T00:00:00"])
def test_timestamps_outside_what_a_timestamp_holds_are_refused(text: str) -> None:
    v = Violations()
    assert v.timestamp("created_from", dt.datetime.fromisoformat(text)) is None
    assert [x.field for x in v.items] == ["created_from"]


def test_timestamps_at_the_edges_inside_are_kept() -> None:
    v = Violations()
    first = v.timestamp("t", dt.datetime(1, 1, 1, tzinfo=dt.UTC))
    last = v.timestamp("t", dt.datetime.fromisoformat("9999-12-31T23:59:59+00:00"))
    assert first is not None and last is not None and not v.items


@pytest.mark.parametrize("text", ["9" * 30, "-1", "abc", "", "9223372036854775808", "１２"])
def test_bounded_int_refuses_what_no_int64_holds(text: str) -> None:
    v = Violations()
    assert v.bounded_int("cursor", text) is None
    assert [x.field for x in v.items] == ["cursor"]


def test_bounded_int_keeps_an_int64() -> None:
    v = Violations()
    assert v.bounded_int("cursor", "9223372036854775807") == 2**63 - 1 and not v.items


def test_id_page_tokens() -> None:
    from crm.common.v1 import paging_pb2

    assert after_id(paging_pb2.PageRequest(page_token="")) == ""
    token = "01a2504c-09bc-7000-b3e2-30319b28cf15"
    assert after_id(paging_pb2.PageRequest(page_token=token)) == token
    for garbage in ("garbage!!", "9" * 60, token.upper(), token + "x"):
        with pytest.raises(InvalidArgument):
            after_id(paging_pb2.PageRequest(page_token=garbage))
