"""Settings of the interaction service (environment variables; see README)."""

from __future__ import annotations

import dataclasses

from crm_platform.config import service_settings


@dataclasses.dataclass(frozen=True)
class Settings(service_settings("interaction", grpc_port=50052, metrics_port=9102)):  # type: ignore[misc]
    """Interaction service settings: the common ones plus its ports and database."""
