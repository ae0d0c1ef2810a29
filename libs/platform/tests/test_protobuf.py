"""``crm_platform.protobuf.timestamp`` sets what ``Timestamp.FromDatetime`` sets (it is a faster way there)."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import timestamp_pb2

from crm_platform.protobuf import timestamp


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2026, 5, 3, 4, 5, 6, 123456, tzinfo=dt.UTC),
        dt.datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=dt.UTC),
        dt.datetime(1, 1, 1, tzinfo=dt.UTC),
        dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 1, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))),  # another offset
        dt.datetime(2026, 1, 1, 0, 0, 0, 999999),  # naive: taken as UTC
    ],
)
def test_timestamp_is_what_from_datetime_sets(value: dt.datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
    assert timestamp(value) == expected
