"""``python -m crm_gateway [serve|migrate|audit-verify]``."""

from __future__ import annotations

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


async def _prepare(settings: Settings, *, seed: bool = True) -> None:
    from crm_gateway.app import prepare_database

    engine = await prepare_database(settings, seed=seed)
    await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """Serve the gateway with uvicorn, or run its migrations and exit."""
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
    if command != "serve":
        print("usage: python -m crm_gateway [serve|migrate|audit-verify]", file=sys.stderr)
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
