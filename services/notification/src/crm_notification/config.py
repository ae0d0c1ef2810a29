"""Settings of the notification service (environment variables; see README)."""

from __future__ import annotations

import dataclasses

from crm_platform.config import SettingsError, service_settings, setting
from crm_platform.pii import staff_contact_key


@dataclasses.dataclass(frozen=True)
class Settings(service_settings("notification", grpc_port=50055, metrics_port=9105)):  # type: ignore[misc]
    """Notification service settings: the common ones plus its ports, database and the staff-contact key."""

    staff_contact_key: str = setting(
        "CRM_STAFF_CONTACT_KEY",
        "dev-staff-contact-key-change-me",
        "Key opening the staff e-mail and mobile the gateway seals in crm.identity.user.contact_changed (only the "
        "gateway and this service hold it).",
        secret=True,
    )

    def validate(self) -> None:
        """The common checks, and no development staff-contact key in production."""
        super().validate()
        if self.env == "prod" and self.staff_contact_key.startswith("dev-"):
            raise SettingsError("CRM_STAFF_CONTACT_KEY must be set in prod")

    def staff_contact_aes_key(self) -> bytes:
        """The AES key of the sealed staff contacts (:func:`crm_platform.org.staff_contact`)."""
        return staff_contact_key(self.staff_contact_key)
