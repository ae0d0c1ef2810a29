"""Settings of the opportunity service (environment variables; see README)."""

from __future__ import annotations

import dataclasses

from crm_platform.config import service_settings


@dataclasses.dataclass(frozen=True)
class Settings(service_settings("opportunity", grpc_port=50053, metrics_port=9103)):  # type: ignore[misc]
    """Opportunity service settings: the common ones plus its ports and database."""
