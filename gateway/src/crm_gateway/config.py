"""Gateway settings, read once from the environment (see README for the table)."""

from __future__ import annotations

import dataclasses
import ipaddress

from crm_platform.config import CommonSettings, SettingsError, setting


@dataclasses.dataclass(frozen=True)
class Settings(CommonSettings):
    """Gateway settings: the common ones plus HTTP, tokens, CORS and the service addresses."""

    host: str = setting("CRM_GATEWAY_HOST", "127.0.0.1", "Address the HTTP server binds.")
    port: int = setting("CRM_GATEWAY_PORT", 8000, "HTTP port.")
    workers: int = setting("CRM_GATEWAY_WORKERS", 1, "HTTP worker processes.")
    database_url: str = setting(
        "GATEWAY_DATABASE_URL", "", "SQLAlchemy URL of the identity database (overrides the defaults).", secret=True
    )
    jwt_secret: str = setting(
        "CRM_GATEWAY_JWT_SECRET", "dev-jwt-secret-change-me-0123456789", "HMAC key signing access tokens.", secret=True
    )
    access_token_minutes: int = setting("CRM_GATEWAY_ACCESS_TOKEN_MINUTES", 15, "Access token lifetime.")
    refresh_token_hours: int = setting("CRM_GATEWAY_REFRESH_TOKEN_HOURS", 12, "Refresh token lifetime.")
    cors_origins: tuple[str, ...] = setting("CRM_GATEWAY_CORS_ORIGINS", (), "Allowed CORS origins, comma separated.")
    max_body_bytes: int = setting("CRM_GATEWAY_MAX_BODY_BYTES", 1_048_576, "Largest accepted request body.")
    login_rate_per_minute: int = setting(
        "CRM_GATEWAY_LOGIN_RATE_PER_MINUTE", 20, "Login attempts per client address per minute (half per username)."
    )
    api_rate_per_second: int = setting(
        "CRM_GATEWAY_API_RATE_PER_SECOND", 100, "API calls per user per second (burst twice that; 4x per address)."
    )
    upload_rate_per_minute: int = setting(
        "CRM_GATEWAY_UPLOAD_RATE_PER_MINUTE",
        30,
        "File uploads (customer imports, dry runs included) per user per minute, in a burst or spread out: each is "
        "stored, read back and inspected by the customer service.",
    )
    trusted_proxies: tuple[str, ...] = setting(
        "CRM_TRUSTED_PROXIES",
        (),
        "Reverse proxies (addresses or CIDR networks, comma separated) whose X-Forwarded-For names the client for "
        "per-address rate limits and the audit trail; empty = the TCP peer is the client.",
    )
    oidc_issuer: str = setting("CRM_GATEWAY_OIDC_ISSUER", "", "Issuer of an external OIDC provider; empty = off.")
    oidc_jwks_url: str = setting("CRM_GATEWAY_OIDC_JWKS_URL", "", "JWKS URL of that provider.")
    oidc_audience: str = setting("CRM_GATEWAY_OIDC_AUDIENCE", "crm", "Audience its tokens must carry.")
    oidc_roles_claim: str = setting("CRM_GATEWAY_OIDC_ROLES_CLAIM", "roles", "Claim holding the CRM role names.")
    oidc_username_claim: str = setting(
        "CRM_GATEWAY_OIDC_USERNAME_CLAIM", "preferred_username", "Claim holding the staff number."
    )
    demo: bool = setting("CRM_DEMO", False, "Seed the demo branches and users at start when absent.")
    demo_password: str = setting("CRM_DEMO_PASSWORD", "Demo-Passw0rd!", "Password of the demo users.", secret=True)
    call_timeout: float = setting("CRM_GATEWAY_CALL_TIMEOUT", 5.0, "Deadline of each call to a service, seconds.")
    staff_contact_key: str = setting(
        "CRM_STAFF_CONTACT_KEY",
        "dev-staff-contact-key-change-me",
        "Key sealing staff e-mail and mobile in crm.identity.user.contact_changed (the notification service "
        "holds the same).",
        secret=True,
    )

    def validate(self) -> None:
        """Common checks, plus: no development token or staff contact key in production."""
        super().validate()
        if self.env == "prod" and self.jwt_secret.startswith("dev-"):
            raise SettingsError("CRM_GATEWAY_JWT_SECRET must be set in prod")
        if self.env == "prod" and self.staff_contact_key.startswith("dev-"):
            raise SettingsError("CRM_STAFF_CONTACT_KEY must be set in prod")
        if len(self.jwt_secret) < 32:
            raise SettingsError("CRM_GATEWAY_JWT_SECRET is not valid: use at least 32 characters")
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise SettingsError(f"CRM_TRUSTED_PROXIES is not valid: {proxy!r} is no address or network") from None
