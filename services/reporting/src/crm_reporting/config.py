"""Settings of the reporting service (environment variables; see README)."""

from __future__ import annotations

import dataclasses

from crm_platform.config import service_settings


@dataclasses.dataclass(frozen=True)
class Settings(service_settings("reporting", grpc_port=50056, metrics_port=9106)):  # type: ignore[misc]
    """Reporting service settings: the common ones plus its ports and database."""
