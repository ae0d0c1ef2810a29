"""Settings of the notification service (environment variables; see README)."""

from __future__ import annotations

import dataclasses

from crm_platform.config import service_settings


@dataclasses.dataclass(frozen=True)
class Settings(service_settings("notification", grpc_port=50055, metrics_port=9105)):  # type: ignore[misc]
    """Notification service settings: the common ones plus its ports and database."""
