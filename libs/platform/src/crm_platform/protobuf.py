"""Small conversions between Python values and well-known protobuf types."""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2


def timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    """A Timestamp from an aware (or UTC-naive) datetime."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value if value.tzinfo else value.replace(tzinfo=dt.UTC))
    return stamp
