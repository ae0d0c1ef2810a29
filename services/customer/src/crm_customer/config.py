"""Settings of the customer service (environment variables; see README)."""

from __future__ import annotations

import dataclasses

from crm_platform.config import DEV_MASTER_KEYS, SettingsError, service_settings, setting

# Kept here for the tests that import it from the customer service (the key is the platform's development key).
__all__ = ["DEV_MASTER_KEYS", "Settings"]


@dataclasses.dataclass(frozen=True)
class Settings(service_settings("customer", grpc_port=50051, metrics_port=9101)):  # type: ignore[misc]
    """Customer service settings: the common ones plus its ports, database, the import helper and import limits."""

    import_helper_process: bool = setting(
        "CRM_CUSTOMER_IMPORT_HELPER_PROCESS",
        True,
        "Inspect uploaded XLSX files and prepare the rows of large imports (validation, encryption) in a helper "
        "process, on a core of its own, started with the service (about 80 MB more); `false` on a single-core pod "
        "(then in a thread of the service).",
    )
    import_max_rows: int = setting(
        "CRM_CUSTOMER_IMPORT_MAX_ROWS",
        1_000_000,
        "Most data rows an import file may hold (the header not counted); a larger file is refused whole, "
        "as soon as it is seen to be larger.",
    )
    import_max_cells_per_row: int = setting(
        "CRM_CUSTOMER_IMPORT_MAX_CELLS_PER_ROW",
        200,
        "Most cells a row of an import file may hold, empty ones included (the template has 29 columns).",
    )
    import_max_uncompressed_bytes: int = setting(
        "CRM_CUSTOMER_IMPORT_MAX_UNCOMPRESSED_BYTES",
        1024 * 1024 * 1024,
        "Most bytes an XLSX import may inflate to, all its parts together (checked while inflating).",
    )
    import_max_shared_strings_bytes: int = setting(
        "CRM_CUSTOMER_IMPORT_MAX_SHARED_STRINGS_BYTES",
        128 * 1024 * 1024,
        "Most bytes of each XLSX part read whole into memory: the shared strings (also styles, workbook).",
    )

    def validate(self) -> None:
        """The common checks, and import limits that are positive."""
        super().validate()
        limits = {
            "CRM_CUSTOMER_IMPORT_MAX_ROWS": self.import_max_rows,
            "CRM_CUSTOMER_IMPORT_MAX_CELLS_PER_ROW": self.import_max_cells_per_row,
            "CRM_CUSTOMER_IMPORT_MAX_UNCOMPRESSED_BYTES": self.import_max_uncompressed_bytes,
            "CRM_CUSTOMER_IMPORT_MAX_SHARED_STRINGS_BYTES": self.import_max_shared_strings_bytes,
        }
        for name, value in limits.items():
            if value < 1:
                raise SettingsError(f"{name}={value} is not valid: expected a positive number")
