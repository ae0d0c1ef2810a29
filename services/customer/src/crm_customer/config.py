"""Settings of the customer service (environment variables; see README)."""

from __future__ import annotations

import dataclasses

from crm_platform.config import DEV_MASTER_KEYS, service_settings, setting

# Kept here for the tests that import it from the customer service (the key is the platform's development key).
__all__ = ["DEV_MASTER_KEYS", "Settings"]


@dataclasses.dataclass(frozen=True)
class Settings(service_settings("customer", grpc_port=50051, metrics_port=9101)):  # type: ignore[misc]
    """Customer service settings: the common ones plus its ports, database and the import helper."""

    import_helper_process: bool = setting(
        "CRM_CUSTOMER_IMPORT_HELPER_PROCESS",
        True,
        "Prepare the rows of large imports (validation, encryption) in a helper process, on a core of its own "
        "(about 90 MB more once started); `false` on a single-core pod.",
    )
