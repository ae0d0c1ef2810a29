"""Shapes shared by every resource."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec
from google.protobuf import timestamp_pb2

from crm.common.v1 import money_pb2

_EPOCH = dt.datetime(1970, 1, 1)  # naive UTC: its isoformat() has no offset, and "Z" says UTC


def rfc3339(stamp: timestamp_pb2.Timestamp) -> str:
    """A protobuf Timestamp as RFC 3339 UTC with a ``Z`` (what ``ToDatetime(tzinfo=UTC).isoformat()`` gives with
    ``+00:00`` as ``Z``, at half its cost: a list answers 50 customers of 3 each)."""
    return (_EPOCH + dt.timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)).isoformat() + "Z"


class Money(msgspec.Struct, forbid_unknown_fields=True):
    """An exact decimal amount in a currency, e.g. ``{"amount": "500000.00", "currency": "CNY"}``: a decimal
    string, never a float, the same in bodies and answers."""

    amount: Annotated[str, msgspec.Meta(pattern=r"^\d{1,15}(\.\d{1,2})?$")]
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")] = "CNY"

    @classmethod
    def from_proto(cls, m: money_pb2.Money) -> Money:
        """The shared Money message (already a decimal string)."""
        return cls(amount=m.amount, currency=m.currency)

    def to_proto(self) -> money_pb2.Money:
        """The shared Money message."""
        return money_pb2.Money(amount=self.amount, currency=self.currency)
