"""``python -m crm_gateway [serve|migrate|audit-verify|announce-org|create-admin]`` (see :data:`USAGE`)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator

import uvicorn

from crm_gateway.config import Settings
from crm_gateway.http_protocol import CoalescingHttpToolsProtocol
from crm_platform.config import SettingsError, load
from crm_platform.tuning import prepare_process, run


class _Server(uvicorn.Server):
    """uvicorn's server, except that SIGTERM/SIGINT end it with exit code 0 after the graceful drain.

    (uvicorn re-raises the captured signal after shutting down, so the process would die "by signal"
    and a supervisor could not tell a clean stop from a crash.)
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


USAGE = "python -m crm_gateway [serve|migrate|audit-verify|announce-org|create-admin --username U [--display-name N]]"


async def _audit_verify(settings: Settings) -> int:
    """Check the whole audit chain; exit 0 when intact, 1 naming the first broken record."""
    from crm_gateway.audit import verify
    from crm_platform.db import create_engine, resolve_database_url

    engine = create_engine(
        resolve_database_url("gateway", settings.database_url, settings.postgres_url, settings.data_dir)
    )
    try:
        checked, broken = await verify(engine)
    finally:
        await engine.dispose()
    if broken is not None:
        print(f"audit chain BROKEN at record {broken} (after {checked} intact records)")
        return 1
    print(f"audit chain intact: {checked} records")
    return 0


async def announce_org(settings: Settings) -> int:
    """Migrate, then write the whole organisation's ``*.announced`` events into the outbox (batches of 500 per
    transaction); the gateway's outbox relay publishes them. Prints what was announced; exit 0."""
    from crm_gateway.announcement import PHASES, Announcer
    from crm_gateway.app import prepare_database
    from crm_gateway.staff_contacts import StaffContacts
    from crm_platform.db import session_factory
    from crm_platform.outbox import Outbox

    engine = await prepare_database(settings, seed=False)
    try:
        announcer = Announcer(Outbox("identity"), StaffContacts(settings.keyring(), settings.staff_contact_key))
        counts = await announcer.announce_all(session_factory(engine))
    finally:
        await engine.dispose()
    print("announced " + ", ".join(f"{counts[phase]} {phase}" for phase in PHASES))
    print("the events are in the outbox; a running gateway's relay publishes them within seconds")
    return 0


async def create_admin(settings: Settings, username: str, display_name: str) -> int:
    """Migrate, then add an active administrator (role ``admin``, no branch) with a random temporary password,
    printed once on stdout, to be changed at first login; exit 0. Exit 2 when the name is taken or malformed."""
    from crm_gateway.app import prepare_database
    from crm_gateway.organisation import Organisation, is_valid_username
    from crm_gateway.policy import Policy
    from crm_gateway.staff_contacts import StaffContacts
    from crm_platform.auth_context import Identity
    from crm_platform.db import session_factory
    from crm_platform.errors import AlreadyExists, InvalidArgument
    from crm_platform.outbox import Outbox

    if not is_valid_username(username):
        print(
            f"crm-gateway: {username!r} is not a staff number: 2-64 letters, digits, '.', '-' or '_'", file=sys.stderr
        )
        return 2
    engine = await prepare_database(settings, seed=False)
    try:
        organisation = Organisation(
            session_factory(engine),
            Outbox("identity"),  # the user.created event: published by the gateway's relay
            Policy.load(),
            StaffContacts(settings.keyring(), settings.staff_contact_key),
        )
        try:
            user, password = await organisation.create_user(
                Identity("system:create-admin"), username, display_name or username, None, None, ["admin"]
            )
        except AlreadyExists:
            print(f"crm-gateway: a user named {username!r} exists already; nothing changed", file=sys.stderr)
            return 2
        except InvalidArgument as exc:
            problems = "; ".join(f"{v.field} {v.description}" for v in exc.violations)
            print(f"crm-gateway: cannot create {username!r}: {problems}", file=sys.stderr)
            return 2
    finally:
        await engine.dispose()
    print(
        f"created administrator {username} ({user['id']}); the temporary password below must be changed at the "
        "first login",
        file=sys.stderr,
    )
    print(password)
    return 0


def _create_admin_arguments(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m crm_gateway create-admin", description="Add the first administrator (no demo seed needed)."
    )
    parser.add_argument("--username", required=True, help="staff number of the administrator")
    parser.add_argument("--display-name", default="", help="name shown (default: the username)")
    return parser.parse_args(args)


async def _prepare(settings: Settings, *, seed: bool = True) -> None:
    from crm_gateway.app import prepare_database

    engine = await prepare_database(settings, seed=seed)
    await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """Serve the gateway with uvicorn, or run one of its commands and exit."""
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "serve"
    try:
        settings = load(Settings)
    except SettingsError as exc:
        print(f"crm-gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    prepare_process("gateway", settings)  # before uvicorn, gRPC and the pools start threads (workers inherit them)
    if command == "migrate":
        run(_prepare(settings, seed=False), settings.event_loop)
        return 0
    if command == "audit-verify":
        return run(_audit_verify(settings), settings.event_loop)
    if command == "announce-org":
        return run(announce_org(settings), settings.event_loop)
    if command == "create-admin":
        try:
            parsed = _create_admin_arguments(args[1:])
        except SystemExit as exc:  # argparse printed the usage
            return 2 if exc.code else 0
        return run(create_admin(settings, parsed.username, parsed.display_name), settings.event_loop)
    if command != "serve":
        print(f"usage: {USAGE}", file=sys.stderr)
        return 2
    options = {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 8,
        "server_header": False,
        # X-Forwarded-For is honoured by the app, only from CRM_TRUSTED_PROXIES (crm_gateway.ratelimit), not
        # by uvicorn, which by default believes it from any local peer.
        "proxy_headers": False,
        "loop": settings.event_loop,
        # httptools, with each response's head and body sent in one write (crm_gateway.http_protocol).
        "http": CoalescingHttpToolsProtocol,
    }
    if settings.workers > 1:  # uvicorn's own multi-process supervisor
        # Migrate and seed once, here, before the workers start: each would otherwise do it at the same time
        # (on SQLite: "database is locked", and a worker that never starts).
        run(_prepare(settings), settings.event_loop)
        uvicorn.run("crm_gateway.app:create_worker_app", **options)
    else:
        _Server(uvicorn.Config("crm_gateway.app:create_app", **options)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
