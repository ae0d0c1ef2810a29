"""Wiring of the notification service: settings → store → servicer → relay and consumers → serve."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from crm.notification.v1 import notification_service_pb2, notification_service_pb2_grpc
from crm_notification import subscriptions
from crm_notification.config import Settings
from crm_notification.servicer import NotificationServicer
from crm_notification.store import InboxStore
from crm_platform.runtime import Context, ServiceSpec


def wire(server: grpc.aio.Server, ctx: Context) -> Sequence[str]:
    """Register the servicer; return the served service names."""
    servicer = NotificationServicer(InboxStore(ctx.sessions, ctx.outbox))
    notification_service_pb2_grpc.add_NotificationServiceServicer_to_server(servicer, server)
    return [notification_service_pb2.DESCRIPTOR.services_by_name["NotificationService"].full_name]


SPEC = ServiceSpec(
    domain="notification",
    package="crm_notification",
    settings_class=Settings,
    wire=wire,
    # The handlers write messages and their events through the service's own outbox (so the relay wakes).
    subscriptions=lambda ctx: subscriptions.subscriptions(InboxStore(ctx.sessions, ctx.outbox)),
)
