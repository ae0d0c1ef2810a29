"""Settings of the ticket service (environment variables; see README)."""

from __future__ import annotations

import dataclasses

from crm_platform.config import service_settings


@dataclasses.dataclass(frozen=True)
class Settings(service_settings("ticket", grpc_port=50054, metrics_port=9104)):  # type: ignore[misc]
    """Ticket service settings: the common ones plus its ports and database."""
