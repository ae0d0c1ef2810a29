"""``python -m crm_gateway create-admin`` and ``announce-org``, run as an operator runs them, against a fresh
database without the demo seed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import jwt
from sqlalchemy import select

from crm.identity.v1 import events_pb2
from crm_gateway.auth import Authenticator
from crm_gateway.identity import IdentityStore, users
from crm_gateway.policy import Policy
from crm_platform.db import create_engine, resolve_database_url, session_factory
from gateway_harness import outbox_events


def _command(database: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "GATEWAY_"))}
    env.update({"GATEWAY_DATABASE_URL": database, "CRM_DATA_DIR": str(tmp_path), "CRM_LOG_LEVEL": "WARNING"})
    return subprocess.run(
        [sys.executable, "-m", "crm_gateway", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


async def test_create_admin_then_log_in_with_the_printed_password(tmp_path: Path) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    created = await asyncio.to_thread(
        _command, database, tmp_path, "create-admin", "--username", "it.admin", "--display-name", "IT Administrator"
    )
    assert created.returncode == 0, created.stderr
    password = created.stdout.strip()
    assert password and "\n" not in password  # the password alone, once, on stdout
    assert "must be changed" in created.stderr

    taken = await asyncio.to_thread(_command, database, tmp_path, "create-admin", "--username", "it.admin")
    assert taken.returncode == 2 and "exists already" in taken.stderr and taken.stdout == ""
    malformed = await asyncio.to_thread(_command, database, tmp_path, "create-admin", "--username", "-x y")
    assert malformed.returncode == 2 and "not a staff number" in malformed.stderr and malformed.stdout == ""
    no_name = await asyncio.to_thread(_command, database, tmp_path, "create-admin")
    assert no_name.returncode == 2

    engine = create_engine(resolve_database_url("gateway", database, "", tmp_path))
    try:
        store = IdentityStore(session_factory(engine))
        async with store.sessions() as session:
            row = (await session.execute(select(users).where(users.c.username == "it.admin"))).one()
        assert (row.roles, row.status, row.branch_id, row.display_name) == ("admin", "active", None, "IT Administrator")
        assert await store.count_users() == 1  # no demo seed
        secret = "test-jwt-secret-0123456789-abcdefghij"
        tokens = await Authenticator(store, Policy.load(), secret, 15, 12).login("it.admin", password)
        claims = jwt.decode(tokens.access_token, secret, algorithms=["HS256"], options={"verify_iss": False})
        assert claims["pwd_change"] is True and claims["roles"] == ["admin"]
        (_, event), *_ = await outbox_events(engine, "crm.identity.user.created", events_pb2.UserChanged)
        assert event.username == "it.admin" and list(event.roles) == ["admin"]

        announced = await asyncio.to_thread(_command, database, tmp_path, "announce-org")
        assert announced.returncode == 0, announced.stderr
        assert "announced 0 branches, 0 teams, 1 users, 0 contacts, 0 calendars" in announced.stdout
        (_, again), *_ = await outbox_events(engine, "crm.identity.user.announced", events_pb2.UserChanged)
        assert again.user_id == row.id and again.status == "active"
    finally:
        await engine.dispose()
