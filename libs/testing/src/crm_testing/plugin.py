"""pytest plugin (entry point ``crm_testing``): real NATS, real PostgreSQL, SQLite files, service runners.

* ``nats_url`` — the machine's NATS on 127.0.0.1:4222 when it runs JetStream, else a private server.
  Tests that use it create streams with unique names (see :func:`unique_streams`).
* ``private_nats`` — a fresh nats-server of our own (tests that stop the broker, or that use the standard
  stream names of the services).
* ``postgres_server_url`` / ``postgres_url`` — the machine's PostgreSQL; a fresh database per test session,
  dropped afterwards. Absent PostgreSQL skips with a reason, except under ``CI=true`` where it fails.
* ``db_url`` — parametrised over SQLite and PostgreSQL, so storage tests run on both.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from crm_testing.nats_server import NatsServer, port_open

PG_HOST = os.environ.get("CRM_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("CRM_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("CRM_TEST_PG_USER", "postgres")


def in_ci() -> bool:
    """Whether this run is CI (where nothing that should run may skip)."""
    return os.environ.get("CI", "").lower() == "true"


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers this project uses (``--strict-markers`` is on)."""
    config.addinivalue_line("markers", "postgres: needs the PostgreSQL server on 127.0.0.1:5432")
    config.addinivalue_line("markers", "slow: takes more than a few seconds (stack start-up, load)")
    config.addinivalue_line("markers", "chaos: kills or stops processes on purpose")


@pytest.fixture(scope="session")
def private_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A private nats-server with JetStream for this test session."""
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server of the test module's own, for modules that publish tens of thousands of events: in the
    session's shared server those would sit in the domain streams, and every service started later (whose
    durable consumers begin at the start of a stream, as in production) would first have to read them all."""
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's NATS when present, else a private one."""
    if port_open("127.0.0.1", 4222):
        yield "nats://127.0.0.1:4222"
        return
    server = NatsServer(tmp_path_factory.mktemp("nats-fallback")).start()
    yield server.url
    server.stop()


def unique_streams(prefix: str = "T") -> tuple[str, str]:
    """A unique stream name and subject root for one test, e.g. ``("T_3f2a…", "t3f2a…")``."""
    token = uuid.uuid4().hex[:12]
    return f"{prefix}_{token}", f"t{token}"


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """``postgresql://user@host:port`` of the machine's PostgreSQL, or skip (fail under CI)."""
    if not port_open(PG_HOST, PG_PORT):
        message = f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT}"
        if in_ci():
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}"


async def _admin(server_url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server_url + "/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class PostgresDatabases:
    """Creates uniquely named databases on the server and drops them all at the end of the session."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.created: list[str] = []

    def create(self) -> str:
        """A fresh empty database; returns its SQLAlchemy URL."""
        name = f"crm_test_{uuid.uuid4().hex[:12]}"
        asyncio.run(_admin(self.server_url, f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return f"{self.server_url.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"

    def drop_all(self) -> None:
        """Drop every database this session created."""
        for name in self.created:
            asyncio.run(_admin(self.server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.created.clear()


@pytest.fixture(scope="session")
def postgres_databases(postgres_server_url: str) -> Iterator[PostgresDatabases]:
    """The session's database factory (cleaned up at the end)."""
    databases = PostgresDatabases(postgres_server_url)
    yield databases
    databases.drop_all()


@pytest.fixture
def postgres_url(postgres_databases: PostgresDatabases) -> str:
    """A fresh PostgreSQL database for one test."""
    return postgres_databases.create()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file for one test."""
    return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database on each backend in turn: the same storage test runs on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    return databases.create()


@pytest.fixture
async def nats_client(nats_url: str) -> AsyncIterator[object]:
    """A connected NATS client on ``nats_url``."""
    import nats

    nc = await nats.connect(nats_url)
    yield nc
    await nc.close()


@pytest.fixture
async def outbox_env(db_url: str) -> AsyncIterator[object]:
    """A fresh database with the platform tables (SQLite and PostgreSQL in turn) and a unique stream name."""
    from crm_platform.bus import StreamSpec
    from crm_testing.outbox_env import make_outbox_env

    name, root = unique_streams()
    env = await make_outbox_env(db_url, StreamSpec(name, (f"{root}.>",)), root)
    yield env
    await env.engine.dispose()
