"""Settings read once from environment variables.

A settings class is a frozen dataclass whose fields declare their variable with :func:`setting`. Reading
happens once, in :func:`load`; a bad value stops the start with an error naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from crm_platform.pii import Keyring, PiiKeyError
from crm_platform.tuning import DEFAULT_EVENT_LOOP, EVENT_LOOPS, POLICIES

# A fixed development key so a bare `python -m crm_<service>` and the tests work; `CRM_ENV=prod` refuses it and
# the local stack generates a real one (libs/testing/src/crm_testing/stack.py).
DEV_MASTER_KEYS = "dev:ZGV2LW9ubHktcGlpLW1hc3Rlci1rZXktMzItYnl0ZXM="

T = TypeVar("T")

_ENV_KEY = "crm_env"
_DOC_KEY = "crm_doc"
_SECRET_KEY = "crm_secret"  # noqa: S105 - a metadata key name, not a secret


class SettingsError(ValueError):
    """A variable is missing or malformed; the message names it."""


def setting(name: str, default: Any, doc: str, *, secret: bool = False) -> Any:
    """Declare a settings field read from the environment variable ``name``."""
    return dataclasses.field(default=default, metadata={_ENV_KEY: name, _DOC_KEY: doc, _SECRET_KEY: secret})


def _parse(name: str, raw: str, kind: Any) -> Any:
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError("expected true/false")
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is Path:
            return Path(raw)
        if kind == tuple[str, ...]:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        return raw
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not valid: {exc}") from None


def load(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build ``cls`` from the environment (or ``environ``); raise :class:`SettingsError` naming a bad variable."""
    source = os.environ if environ is None else environ
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = field.metadata.get(_ENV_KEY)
        if name is None or name not in source:
            continue
        values[field.name] = _parse(name, source[name], hints[field.name])
    settings = cls(**values)
    validate = getattr(settings, "validate", None)
    if validate is not None:
        validate()
    return settings


def env_var_names(cls: type) -> list[str]:
    """Every environment variable ``cls`` reads, in declaration order."""
    return [f.metadata[_ENV_KEY] for f in dataclasses.fields(cls) if _ENV_KEY in f.metadata]


def describe(cls: type) -> list[tuple[str, str, str, bool]]:
    """Rows of (variable, default, description, secret) for documentation tables."""
    rows = []
    for f in dataclasses.fields(cls):
        if _ENV_KEY not in f.metadata:
            continue
        default = "" if f.metadata[_SECRET_KEY] else str(f.default)
        rows.append((f.metadata[_ENV_KEY], default, f.metadata[_DOC_KEY], f.metadata[_SECRET_KEY]))
    return rows


@dataclasses.dataclass(frozen=True)
class CommonSettings:
    """Settings every part reads."""

    env: str = setting("CRM_ENV", "dev", "`dev` or `prod`; prod refuses embedded defaults for secrets.")
    data_dir: Path = setting("CRM_DATA_DIR", Path("var"), "Directory for local state (SQLite files, NATS data).")
    log_level: str = setting("CRM_LOG_LEVEL", "INFO", "Log level: DEBUG, INFO, WARNING, ERROR.")
    nats_url: str = setting("CRM_NATS_URL", "nats://127.0.0.1:4222", "NATS server URL(s), comma separated.")
    nats_stream_replicas: int = setting(
        "CRM_NATS_STREAM_REPLICAS", 1, "Replicas of each JetStream stream this part creates (3 in a cluster)."
    )
    postgres_url: str = setting(
        "CRM_POSTGRES_URL", "", "PostgreSQL server URL; each service then uses its own database `crm_<service>`."
    )
    otlp_endpoint: str = setting("CRM_OTLP_ENDPOINT", "", "OTLP/gRPC collector endpoint for traces; empty = no export.")
    internal_secret: str = setting(
        "CRM_INTERNAL_SECRET",
        "dev-internal-secret-change-me",
        "HMAC key with which the gateway signs the caller identity it sends to services.",
        secret=True,
    )
    cpu_policy: str = setting(
        "CRM_CPU_POLICY",
        "batch",
        "Linux scheduling policy of the process's threads: `batch` (a woken thread does not preempt the running "
        "one: fewer thread switches per request under load) or `normal` (the kernel's default).",
    )
    event_loop: str = setting(
        "CRM_EVENT_LOOP",
        DEFAULT_EVENT_LOOP,
        "Event loop: `uvloop` (compiled transports) or `asyncio` (the standard one).",
    )

    # Where the services are (the gateway calls them all; a service calls another with its own identity).
    customer_addr: str = setting("CRM_CUSTOMER_ADDR", "127.0.0.1:50051", "customer service host:port.")
    interaction_addr: str = setting("CRM_INTERACTION_ADDR", "127.0.0.1:50052", "interaction service host:port.")
    opportunity_addr: str = setting("CRM_OPPORTUNITY_ADDR", "127.0.0.1:50053", "opportunity service host:port.")
    ticket_addr: str = setting("CRM_TICKET_ADDR", "127.0.0.1:50054", "service-ticket service host:port.")
    notification_addr: str = setting("CRM_NOTIFICATION_ADDR", "127.0.0.1:50055", "notification service host:port.")
    reporting_addr: str = setting("CRM_REPORTING_ADDR", "127.0.0.1:50056", "reporting service host:port.")

    # Every service seals personal data with per-customer data keys wrapped by these (crm_platform.pii).
    pii_master_keys: str = setting(
        "CRM_PII_MASTER_KEYS",
        DEV_MASTER_KEYS,
        "Master keys wrapping customers' data keys: `kid1:base64key,kid2:base64key` (32-byte keys).",
        secret=True,
    )
    pii_active_key_id: str = setting(
        "CRM_PII_ACTIVE_KEY_ID", "dev", "Key id of the master key that wraps new data keys (rotation: add, switch)."
    )
    service_call_timeout: float = setting(
        "CRM_SERVICE_CALL_TIMEOUT", 5.0, "Deadline of a call a service makes to another service, seconds."
    )

    def service_addresses(self) -> dict[str, str]:
        """Service name → address."""
        return {
            "customer": self.customer_addr,
            "interaction": self.interaction_addr,
            "opportunity": self.opportunity_addr,
            "ticket": self.ticket_addr,
            "notification": self.notification_addr,
            "reporting": self.reporting_addr,
        }

    def validate(self) -> None:
        """Refuse development defaults for secrets in production."""
        if self.env not in {"dev", "prod"}:
            raise SettingsError(f"CRM_ENV={self.env!r} is not valid: expected dev or prod")
        if self.env == "prod" and self.internal_secret.startswith("dev-"):
            raise SettingsError("CRM_INTERNAL_SECRET must be set in prod")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise SettingsError(f"CRM_LOG_LEVEL={self.log_level!r} is not valid")
        if self.cpu_policy not in POLICIES:
            raise SettingsError(f"CRM_CPU_POLICY={self.cpu_policy!r} is not valid: expected {' or '.join(POLICIES)}")
        if self.event_loop not in EVENT_LOOPS:
            raise SettingsError(f"CRM_EVENT_LOOP={self.event_loop!r} is not valid: expected {' or '.join(EVENT_LOOPS)}")
        try:
            self.keyring()
        except PiiKeyError as exc:
            raise SettingsError(f"CRM_PII_MASTER_KEYS / CRM_PII_ACTIVE_KEY_ID are not valid: {exc}") from None
        if self.env == "prod" and self.pii_master_keys == DEV_MASTER_KEYS:
            raise SettingsError("CRM_PII_MASTER_KEYS must be set in prod")

    def keyring(self) -> Keyring:
        """The PII master keys as a :class:`Keyring`."""
        return Keyring.from_spec(self.pii_master_keys, self.pii_active_key_id)


def service_settings(domain: str, grpc_port: int, metrics_port: int) -> type[CommonSettings]:
    """Make the settings class of one service: the common fields plus its ports, bind host and database."""
    upper = domain.upper()
    cls = dataclasses.make_dataclass(
        f"{domain.capitalize()}Settings",
        [
            ("grpc_host", str, setting(f"CRM_{upper}_GRPC_HOST", "127.0.0.1", "Address the gRPC server binds.")),
            ("grpc_port", int, setting(f"CRM_{upper}_GRPC_PORT", grpc_port, "gRPC port.")),
            ("metrics_port", int, setting(f"CRM_{upper}_METRICS_PORT", metrics_port, "Prometheus metrics port.")),
            (
                "database_url",
                str,
                setting(
                    f"{upper}_DATABASE_URL",
                    "",
                    "SQLAlchemy URL of this service's database; overrides CRM_POSTGRES_URL and the SQLite default.",
                    secret=True,
                ),
            ),
            ("db_pool_size", int, setting(f"CRM_{upper}_DB_POOL_SIZE", 10, "Database connection pool size.")),
        ],
        bases=(CommonSettings,),
        frozen=True,
    )
    cls.domain = domain  # type: ignore[attr-defined]
    return cls
