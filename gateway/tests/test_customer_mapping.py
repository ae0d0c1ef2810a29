"""The helpers mapping a customer message to its HTTP shape answer what protobuf's own conversions would (they
are faster ways there: a list maps 50 customers per answer)."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import timestamp_pb2

from crm_gateway.schemas.common import rfc3339
from crm_gateway.schemas.customers import ENUMS, enum_text


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(0, 0), (1778000000, 123456789), (1778000000, 999), (-1, 1000), (253402300799, 999999999), (-62135596800, 0)],
)
def test_rfc3339_is_utc_isoformat_with_z(seconds: int, nanos: int) -> None:
    stamp = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    assert rfc3339(stamp) == stamp.ToDatetime(tzinfo=dt.UTC).isoformat().replace("+00:00", "Z")


def test_enum_text_names_each_value_and_none_for_unspecified_or_unknown() -> None:
    for descriptor in ENUMS.values():
        prefix = descriptor.values_by_number[0].name.removesuffix("UNSPECIFIED")
        for value in descriptor.values:
            expected = None if value.number == 0 else value.name.removeprefix(prefix).lower()
            assert enum_text(descriptor, value.number) == expected
        assert enum_text(descriptor, 999) is None
    assert enum_text(ENUMS["tier"], 0) is None
    assert enum_text(ENUMS["tier"], ENUMS["tier"].values_by_name["TIER_GOLD"].number) == "gold"
