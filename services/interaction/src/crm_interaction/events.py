"""What the interaction service publishes (its consumers are in ``subscriptions``)."""

from __future__ import annotations

from crm.interaction.v1 import events_pb2, interaction_pb2
from crm_interaction.domain import Interaction
from crm_platform.protobuf import timestamp

INTERACTION_LOGGED = "crm.interaction.interaction.logged"

CHANNEL_TO_PROTO = {
    "phone": interaction_pb2.CHANNEL_PHONE,
    "visit": interaction_pb2.CHANNEL_VISIT,
    "wechat": interaction_pb2.CHANNEL_WECHAT,
    "email": interaction_pb2.CHANNEL_EMAIL,
    "sms": interaction_pb2.CHANNEL_SMS,
    "branch_counter": interaction_pb2.CHANNEL_BRANCH_COUNTER,
}


def interaction_logged(interaction: Interaction) -> events_pb2.InteractionLogged:
    """The ``interaction.logged`` payload (no summary text: it may hold personal data)."""
    return events_pb2.InteractionLogged(
        interaction_id=interaction.id,
        customer_id=interaction.customer_id,
        channel=CHANNEL_TO_PROTO[interaction.channel.value],
        logged_by=interaction.logged_by,
        occurred_at=timestamp(interaction.occurred_at),
    )
