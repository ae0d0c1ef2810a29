"""Settings of the customer service (environment variables; see README)."""

from __future__ import annotations

import dataclasses

from crm_platform.config import service_settings


@dataclasses.dataclass(frozen=True)
class Settings(service_settings("customer", grpc_port=50051, metrics_port=9101)):  # type: ignore[misc]
    """Customer service settings: the common ones plus its ports and database."""
