"""Settings of the customer service (environment variables; see README)."""

from __future__ import annotations

import dataclasses

from crm_platform.config import SettingsError, service_settings, setting
from crm_platform.pii import Keyring, PiiKeyError

# A fixed development key so a bare `python -m crm_customer` and the tests work; `CRM_ENV=prod` refuses it and
# the local stack generates a real one (libs/testing/src/crm_testing/stack.py).
DEV_MASTER_KEYS = "dev:ZGV2LW9ubHktcGlpLW1hc3Rlci1rZXktMzItYnl0ZXM="


@dataclasses.dataclass(frozen=True)
class Settings(service_settings("customer", grpc_port=50051, metrics_port=9101)):  # type: ignore[misc]
    """Customer service settings: the common ones plus its ports, database and PII master keys."""

    pii_master_keys: str = setting(
        "CRM_PII_MASTER_KEYS",
        DEV_MASTER_KEYS,
        "Master keys wrapping customers' data keys: `kid1:base64key,kid2:base64key` (32-byte keys).",
        secret=True,
    )
    pii_active_key_id: str = setting(
        "CRM_PII_ACTIVE_KEY_ID", "dev", "Key id of the master key that wraps new data keys (rotation: add, switch)."
    )

    import_helper_process: bool = setting(
        "CRM_CUSTOMER_IMPORT_HELPER_PROCESS",
        True,
        "Prepare the rows of large imports (validation, encryption) in a helper process, on a core of its own "
        "(about 90 MB more once started); `false` on a single-core pod.",
    )

    def validate(self) -> None:
        """The common checks, then the keyring must build (and not from the development key in prod)."""
        super().validate()
        try:
            self.keyring()
        except PiiKeyError as exc:
            raise SettingsError(f"CRM_PII_MASTER_KEYS / CRM_PII_ACTIVE_KEY_ID are not valid: {exc}") from None
        if self.env == "prod" and self.pii_master_keys == DEV_MASTER_KEYS:
            raise SettingsError("CRM_PII_MASTER_KEYS must be set in prod")

    def keyring(self) -> Keyring:
        """The master keys as a :class:`Keyring`."""
        return Keyring.from_spec(self.pii_master_keys, self.pii_active_key_id)
