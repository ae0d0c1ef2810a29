"""Small conversions between Python values and well-known protobuf types."""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    """A Timestamp from an aware (or UTC-naive) datetime.

    What ``Timestamp.FromDatetime`` sets, by integer arithmetic on the offset from the epoch: a quarter of its
    cost (``utctimetuple`` and ``calendar.timegm``), which counted when a list answers 50 customers of 3 each.
    """
    since = (value if value.tzinfo else value.replace(tzinfo=dt.UTC)) - _EPOCH
    return timestamp_pb2.Timestamp(seconds=since.days * 86400 + since.seconds, nanos=since.microseconds * 1000)
