"""The Litestar application: routes, the permission guard, problem details, lifespan of shared clients."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_gateway.announcement import KIND as ORG_ANNOUNCE
from crm_gateway.announcement import Announcer, WeeklyAnnouncement
from crm_gateway.audit import AuditLog
from crm_gateway.auth import Authenticator
from crm_gateway.calendars import BusinessCalendars
from crm_gateway.config import Settings
from crm_gateway.errors import EXCEPTION_HANDLERS
from crm_gateway.guards import permission_guard
from crm_gateway.identity import IdentityStore
from crm_gateway.input_guard import input_guard
from crm_gateway.middleware import audit_middleware, observability_middleware
from crm_gateway.oidc import OidcVerifier
from crm_gateway.organisation import Organisation
from crm_gateway.policy import OPENAPI_PATH, Policy, is_automatic_options
from crm_gateway.ratelimit import Limits
from crm_gateway.revocations import RevocationFeed
from crm_gateway.routes import (
    access,
    admin,
    audit,
    auth,
    calendars,
    customer_360,
    customer_imports,
    customers,
    health,
    interactions,
    notifications,
    opportunities,
    privacy,
    tickets,
)
from crm_gateway.seed import seed_demo
from crm_gateway.staff_contacts import StaffContacts
from crm_platform.bus import DOMAIN_STREAMS, Bus
from crm_platform.clients import Clients
from crm_platform.config import load
from crm_platform.db import create_engine, ensure_database, resolve_database_url, session_factory
from crm_platform.heap import freeze_startup_heap
from crm_platform.logging import configure_logging
from crm_platform.migrations import migrate
from crm_platform.outbox import Outbox, OutboxRelay
from crm_platform.schedule import Scheduler, ScheduleRunner
from crm_platform.telemetry import configure_tracing

log = logging.getLogger(__name__)

ROUTES = [
    health.healthz,
    health.readyz,
    health.metrics_endpoint,
    auth.login,
    auth.refresh,
    auth.logout,
    auth.change_password,
    auth.me,
    auth.enrol_totp,
    auth.confirm_totp,
    customers.get_customer,
    customers.create_customer,
    customers.update_customer,
    customers.list_customers,
    customers.customer_history,
    customers.assign_customer,
    customers.reclaim_customer,
    customers.merge_customers,
    customers.tag_customer,
    customers.create_segment,
    customers.list_segments,
    customers.segment_members,
    customers.replace_holdings,
    customers.list_holdings,
    *customer_imports.ROUTES,
    customers.assign_customers,
    customers.replace_holdings_batch,
    customers.define_managed_tag,
    customers.list_managed_tags,
    notifications.list_inbox,
    audit.list_audit,
    *admin.ROUTES,
    *calendars.ROUTES,
    access.explain_access,
    interactions.list_customer_interactions,
    interactions.log_customer_interaction,
    opportunities.list_customer_opportunities,
    tickets.list_customer_tickets,
    customer_360.get_customer_360,
    privacy.reveal,
    privacy.erase,
]


def check_permissions_declared(app: Litestar, policy: Policy) -> None:
    """Refuse to start when a route declares no permission, or one the policy does not know."""
    known = policy.permissions | {"public", "authenticated"}
    for route in app.routes:
        if route.path.startswith(OPENAPI_PATH):
            continue  # the framework's own OpenAPI documents are public by design
        for handler in route.route_handlers:  # type: ignore[union-attr]
            if is_automatic_options(handler):
                continue
            permission = handler.opt.get("permission")
            if permission is None:
                raise RuntimeError(f"route {route.path} ({handler.handler_name}) declares no permission")
            if permission not in known:
                raise RuntimeError(f"route {route.path} declares unknown permission {permission!r}")


async def prepare_database(settings: Settings, *, seed: bool = True) -> AsyncEngine:
    """The gateway's database, created if missing, migrated, and (with ``seed``) holding the demo organisation
    when ``CRM_DEMO`` asks for it. Idempotent: once done, a second call only reads."""
    url = resolve_database_url("gateway", settings.database_url, settings.postgres_url, settings.data_dir)
    await ensure_database(url)
    engine = create_engine(url)
    await migrate(engine, "crm_gateway")
    if seed and settings.demo:
        await seed_demo(IdentityStore(session_factory(engine)), settings.demo_password)
    return engine


def create_worker_app() -> Litestar:
    """The app of one of several uvicorn worker processes (``CRM_GATEWAY_WORKERS`` > 1). A worker starts in a
    fresh interpreter, without ``python -m crm_gateway``'s set-up, so it sets up JSON logging and tracing itself;
    the parent prepared the database before starting the workers, so their start-ups only read it."""
    settings = load(Settings)
    configure_logging("gateway", settings.log_level)
    configure_tracing("gateway", settings.otlp_endpoint)
    return create_app(settings)


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the gateway application (uvicorn calls this factory)."""
    settings = settings or load(Settings)
    policy = Policy.load()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        engine = await prepare_database(settings)
        store = IdentityStore(session_factory(engine))
        bus = Bus(settings.nats_url, name="crm-gateway", replicas=settings.nats_stream_replicas)
        await bus.connect()
        await bus.ensure_streams(DOMAIN_STREAMS)
        relay = OutboxRelay(engine, bus)
        relay.start()
        store.outbox = Outbox("identity", notify=relay.wake)  # session revocations reach every replica
        org_outbox = Outbox("identity", notify=relay.wake)
        contacts = StaffContacts(settings.keyring(), settings.staff_contact_key)
        # The weekly re-announcement of the organisation, run once across the replicas (crm_gateway.announcement).
        # Nothing else is scheduled here, and what this process schedules wakes its runner: a slow poll will do.
        runner: ScheduleRunner  # the Scheduler's notify wakes it, once it exists
        weekly = WeeklyAnnouncement(
            Announcer(org_outbox, contacts), Scheduler(notify=lambda due_at: runner.notice(due_at))
        )
        runner = ScheduleRunner(engine, {ORG_ANNOUNCE: weekly.run}, poll_interval=10.0, name="gateway-schedule")
        runner.start()
        await weekly.ensure(store.sessions)
        clients = Clients(settings.service_addresses(), settings.internal_secret, timeout=settings.call_timeout)
        app.state.update(
            settings=settings,
            engine=engine,
            store=store,
            bus=bus,
            clients=clients,
            audit=AuditLog(engine),
            policy=policy,
            oidc=OidcVerifier(
                store,
                policy,
                settings.oidc_issuer,
                settings.oidc_jwks_url,
                settings.oidc_audience,
                settings.oidc_roles_claim,
                settings.oidc_username_claim,
            )
            if settings.oidc_issuer
            else None,
            limits=Limits(
                settings.login_rate_per_minute,
                settings.api_rate_per_second,
                settings.trusted_proxies,
                upload_per_minute=settings.upload_rate_per_minute,
            ),
            organisation=Organisation(store.sessions, org_outbox, policy, contacts),
            calendars=BusinessCalendars(store.sessions, org_outbox),
            schedule_runner=runner,
            authenticator=Authenticator(
                store, policy, settings.jwt_secret, settings.access_token_minutes, settings.refresh_token_hours
            ),
        )
        authenticator: Authenticator = app.state.authenticator
        revocation_feed = RevocationFeed(authenticator.revocations, bus.nc, store.revoked_sessions_since)
        await revocation_feed.start()
        freeze_startup_heap()
        try:
            yield
        finally:
            await revocation_feed.stop()
            await app.state.audit.close()
            await clients.close()
            await runner.stop()
            await relay.stop()
            await bus.close()
            await engine.dispose()

    cors = (
        CORSConfig(allow_origins=list(settings.cors_origins), allow_credentials=False)
        if settings.cors_origins
        else None
    )
    app = Litestar(
        route_handlers=ROUTES,
        # The permission guard first, so a request the input guard refuses is audited with its caller.
        guards=[permission_guard, input_guard],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[observability_middleware, audit_middleware],
        lifespan=[lifespan],
        cors_config=cors,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Bank-branch CRM API",
            version="1.0.0",
            path=OPENAPI_PATH,
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")}
            ),
            security=[{"bearer": []}],
        ),
        debug=False,
        # Our JSON-lines logging (crm_platform.logging) stays in charge: Litestar's default logging config would
        # replace the root handler with its plain-text format once the app starts.
        logging_config=None,
    )
    check_permissions_declared(app, policy)
    return app
