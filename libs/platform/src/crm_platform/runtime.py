"""``serve()``: the one bootstrap of every service — logging, tracing, metrics, database and migrations,
NATS streams, outbox relay, consumers, the scheduled-work runner, typed clients of the other services (with the
service's own identity), gRPC with health and reflection, signals and graceful drain.

Shutdown order on SIGTERM/SIGINT: health NOT_SERVING (load balancers stop sending), stop accepting and
finish in-flight calls (grace period), stop consumers (the message in hand commits and acks), stop the
scheduled-work runner (the batch in hand commits), flush the
outbox relay, drain NATS, dispose the engine.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from crm_platform import config as config_module
from crm_platform.bus import DOMAIN_STREAMS, Bus
from crm_platform.clients import Clients
from crm_platform.config import CommonSettings, SettingsError
from crm_platform.db import create_engine, ensure_database, resolve_database_url, session_factory
from crm_platform.directory import CustomerDirectory, customer_lookup
from crm_platform.grpc_server import (
    add_health_and_reflection,
    create_server,
    require_declared_permissions,
    set_serving,
)
from crm_platform.heap import freeze_startup_heap
from crm_platform.inbox import ConsumerRunner, Subscription
from crm_platform.metrics import serve_metrics
from crm_platform.migrations import migrate
from crm_platform.outbox import Outbox, OutboxRelay
from crm_platform.pii.keys import CustomerKeys
from crm_platform.policy import Policy, default_policy
from crm_platform.schedule import Handler as ScheduleHandler
from crm_platform.schedule import Scheduler, ScheduleRunner
from crm_platform.tuning import prepare_process, run

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What a service's wiring receives: its settings and the shared infrastructure."""

    settings: CommonSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    outbox: Outbox
    bus: Bus
    clients: Clients
    policy: Policy
    directory: CustomerDirectory
    keys: CustomerKeys  # per-customer data keys of this service (crm_platform.pii.keys)
    scheduler: Scheduler  # schedules items in the caller's transaction (crm_platform.schedule)
    background: list[asyncio.Task[None]] = field(default_factory=list)


Command = Callable[["ServiceSpec", CommonSettings, list[str]], Coroutine[Any, Any, int]]


@dataclass(frozen=True)
class ServiceSpec:
    """How to build one service.

    ``wire`` adds the servicers to the server and returns their full service names;
    ``subscriptions`` lists the service's durable consumers; ``schedules`` maps each kind of scheduled item the
    service writes (``ctx.scheduler``) to its handler, run exactly once by the process's runner.
    """

    domain: str
    package: str
    settings_class: type[CommonSettings]
    wire: Callable[[grpc.aio.Server, Context], Sequence[str]]
    subscriptions: Callable[[Context], list[Subscription]] = lambda _ctx: []
    schedules: Callable[[Context], Mapping[str, ScheduleHandler]] = lambda _ctx: {}
    # Operator commands beside serve and migrate: ``python -m crm_<domain> <name> [args]`` runs
    # ``commands[name](spec, settings, args)`` and exits with the code it returns.
    commands: Mapping[str, Command] = field(default_factory=dict)


async def open_database(spec: ServiceSpec, settings: CommonSettings) -> AsyncEngine:
    """Create the service's database if needed, connect, and migrate it to head."""
    url = resolve_database_url(
        spec.domain,
        getattr(settings, "database_url", ""),
        settings.postgres_url,
        settings.data_dir,
    )
    await ensure_database(url)
    engine = create_engine(url, pool_size=getattr(settings, "db_pool_size", 10))
    await migrate(engine, spec.package)
    return engine


async def run_service(spec: ServiceSpec, settings: CommonSettings, stop: asyncio.Event) -> None:
    """Run ``spec`` until ``stop`` is set, then drain and return."""
    host = getattr(settings, "grpc_host", "127.0.0.1")
    serve_metrics(settings.metrics_port, host=host)
    engine = await open_database(spec, settings)
    bus = Bus(settings.nats_url, name=f"crm-{spec.domain}", replicas=settings.nats_stream_replicas)
    await bus.connect()
    await bus.ensure_streams(DOMAIN_STREAMS)
    relay = OutboxRelay(engine, bus)
    clients = Clients(settings.service_addresses(), settings.internal_secret, timeout=settings.service_call_timeout)
    policy = default_policy()
    runner: ScheduleRunner | None = None

    def notice(due_at: dt.datetime) -> None:  # an item scheduled here: the runner looks for it by then
        if runner is not None:
            runner.notice(due_at)

    ctx = Context(
        settings,
        engine,
        session_factory(engine),
        Outbox(spec.domain, notify=relay.wake),
        bus,
        clients,
        policy,
        CustomerDirectory(customer_lookup(clients, policy, spec.domain)),
        CustomerKeys(settings.keyring()),
        Scheduler(notify=notice),
    )
    relay.start()

    server = create_server(spec.domain, settings.internal_secret)
    names = list(spec.wire(server, ctx))
    require_declared_permissions(names)
    health = add_health_and_reflection(server, names)
    port = server.add_insecure_port(f"{host}:{settings.grpc_port}")
    consumers = ConsumerRunner(bus, ctx.sessions, ctx.outbox, spec.subscriptions(ctx))
    await consumers.start()
    schedules = spec.schedules(ctx)
    if schedules:
        runner = ScheduleRunner(ctx.sessions, schedules, name=f"{spec.domain}-schedule")
        runner.start()
    await server.start()
    await set_serving(health, names, True)
    freeze_startup_heap()
    log.info("serving", extra={"grpc": f"{host}:{port}", "metrics_port": settings.metrics_port})

    await stop.wait()
    log.info("draining")
    await set_serving(health, names, False)
    await server.stop(grace=5)
    for task in ctx.background:
        task.cancel()
    await asyncio.gather(*ctx.background, return_exceptions=True)
    await consumers.stop()
    if runner is not None:
        await runner.stop()  # before the relay: a batch in hand commits its events, the relay then publishes them
    await relay.stop()
    await clients.close()
    await bus.close()
    await engine.dispose()
    log.info("stopped")


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def main(spec: ServiceSpec, argv: Sequence[str] | None = None) -> int:
    """Command line of every service: ``python -m crm_<domain> [serve|migrate|<one of spec.commands>]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else "serve"
    try:
        settings = config_module.load(spec.settings_class)
    except SettingsError as exc:
        print(f"crm-{spec.domain}: configuration error: {exc}", file=sys.stderr)
        return 2
    prepare_process(spec.domain, settings)

    async def _migrate_only() -> None:
        engine = await open_database(spec, settings)
        await engine.dispose()

    async def _serve() -> None:
        stop = asyncio.Event()
        _install_signal_handlers(stop)
        await run_service(spec, settings, stop)

    if command == "migrate":
        run(_migrate_only(), settings.event_loop)
    elif command == "serve":
        run(_serve(), settings.event_loop)
    elif command in spec.commands:
        return run(spec.commands[command](spec, settings, args[1:]), settings.event_loop)
    else:
        names = "|".join(["serve", "migrate", *spec.commands])
        print(f"usage: python -m crm_{spec.domain} [{names}]", file=sys.stderr)
        return 2
    return 0
