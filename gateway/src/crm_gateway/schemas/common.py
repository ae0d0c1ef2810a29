"""Shapes shared by every resource."""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2


def rfc3339(stamp: timestamp_pb2.Timestamp) -> str:
    """A protobuf Timestamp as RFC 3339 UTC with a ``Z``."""
    return stamp.ToDatetime(tzinfo=dt.UTC).isoformat().replace("+00:00", "Z")
