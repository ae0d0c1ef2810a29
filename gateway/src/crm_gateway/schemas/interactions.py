"""Bodies of the interaction routes."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec

from crm.interaction.v1 import interaction_pb2
from crm_gateway.schemas.common import rfc3339

CHANNEL_FROM_PROTO = {
    interaction_pb2.CHANNEL_PHONE: "phone",
    interaction_pb2.CHANNEL_VISIT: "visit",
    interaction_pb2.CHANNEL_WECHAT: "wechat",
    interaction_pb2.CHANNEL_EMAIL: "email",
    interaction_pb2.CHANNEL_SMS: "sms",
    interaction_pb2.CHANNEL_BRANCH_COUNTER: "branch_counter",
}


CHANNEL_TO_PROTO = {v: k for k, v in CHANNEL_FROM_PROTO.items()}


class InteractionIn(msgspec.Struct, forbid_unknown_fields=True):
    """A contact to log; the interaction service validates it again (and says which field is wrong)."""

    channel: Annotated[str, msgspec.Meta(max_length=20)]
    summary: Annotated[str, msgspec.Meta(max_length=2000)]
    occurred_at: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None


class InteractionOut(msgspec.Struct):
    """One logged contact with a customer (interactions are never edited, so there is no ``updated_at``)."""

    id: str
    customer_id: str
    channel: str
    summary: str
    occurred_at: str
    logged_by: str
    created_at: str

    @classmethod
    def from_proto(cls, i: interaction_pb2.Interaction) -> InteractionOut:
        """Map the service's message to the HTTP shape."""
        return cls(
            id=i.id,
            customer_id=i.customer_id,
            channel=CHANNEL_FROM_PROTO.get(i.channel, "unspecified"),
            summary=i.summary,
            occurred_at=rfc3339(i.occurred_at),
            logged_by=i.logged_by,
            created_at=rfc3339(i.created_at),
        )
