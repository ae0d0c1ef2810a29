"""gRPC ``crm.interaction.v1.InteractionService``: protobuf in, domain call, protobuf out. No SQL here."""

from __future__ import annotations

from typing import Any

from crm.common.v1 import paging_pb2
from crm.interaction.v1 import interaction_pb2, interaction_service_pb2, interaction_service_pb2_grpc
from crm_interaction.domain import Interaction, log_contact, require_read
from crm_interaction.events import CHANNEL_TO_PROTO
from crm_interaction.store import InteractionStore
from crm_platform.auth_context import current_identity
from crm_platform.grpc_server import declare_permissions
from crm_platform.idempotency import fingerprint
from crm_platform.outbox import utcnow
from crm_platform.paging import after_id, page_limit
from crm_platform.protobuf import timestamp

_PROTO_TO_CHANNEL = {v: k for k, v in CHANNEL_TO_PROTO.items()}


def to_proto(item: Interaction) -> interaction_pb2.Interaction:
    """The wire form of an interaction."""
    return interaction_pb2.Interaction(
        id=item.id,
        customer_id=item.customer_id,
        channel=CHANNEL_TO_PROTO[item.channel.value],
        summary=item.summary,
        occurred_at=timestamp(item.occurred_at),
        logged_by=item.logged_by,
        created_at=timestamp(item.created_at),
    )


class InteractionServicer(interaction_service_pb2_grpc.InteractionServiceServicer):
    """Translates InteractionService calls; errors map to status codes in the shared interceptor."""

    def __init__(self, store: InteractionStore) -> None:
        self._store = store

    async def LogInteraction(self, request: Any, context: Any) -> interaction_service_pb2.LogInteractionResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        occurred = request.occurred_at.ToDatetime(tzinfo=utcnow().tzinfo) if request.HasField("occurred_at") else None
        interaction = log_contact(
            identity, request.customer_id, _PROTO_TO_CHANNEL.get(request.channel), request.summary, occurred, utcnow()
        )
        stored = await self._store.log(identity, interaction, request.request_id, fingerprint(request))
        return interaction_service_pb2.LogInteractionResponse(interaction=to_proto(stored))

    async def ListInteractions(self, request: Any, context: Any) -> interaction_service_pb2.ListInteractionsResponse:  # noqa: N802
        """See the proto."""
        identity = current_identity()
        require_read(identity)
        items, next_token = await self._store.list_for_customer(
            identity, request.customer_id, page_limit(request.page), after_id(request.page)
        )
        return interaction_service_pb2.ListInteractionsResponse(
            interactions=[to_proto(i) for i in items], page=paging_pb2.PageInfo(next_page_token=next_token)
        )


# The permission each method needs: the server refuses callers without it and applies its scope.
declare_permissions(
    interaction_service_pb2.DESCRIPTOR.services_by_name["InteractionService"],
    {
        "LogInteraction": "interaction:write",
        "ListInteractions": "interaction:read",
    },
)
