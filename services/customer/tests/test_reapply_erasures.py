"""``python -m crm_customer reapply-erasures``: a database restored from a backup taken before an erasure holds
the customer's data key again; the command erases it again from the ``customer.erased`` events in JetStream
(real NATS, a real SQLite file backed up online as `make backup` does, the real service before and after)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from test_customer_files import HEAD, OTHER_ID, RM1, individual, published

from crm.customer.v1 import customer_service_pb2 as pb
from crm.customer.v1 import customer_service_pb2_grpc
from crm_customer.server import SPEC
from crm_testing.nats_server import NatsServer
from crm_testing.services import TEST_SECRET, running_service


def _backup(source: Path, target: Path) -> None:
    """SQLite's online backup, as ``make backup`` takes it (a plain copy would miss the write-ahead log)."""
    with closing(sqlite3.connect(source)) as live, closing(sqlite3.connect(target)) as copy:
        live.backup(copy)


def _command(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m crm_customer reapply-erasures <args>`` with ``env`` (upper-cased names) and a private data dir."""
    return subprocess.run(
        [sys.executable, "-m", "crm_customer", "reapply-erasures", *args],
        env={"PATH": "/usr/bin:/bin", "CRM_DATA_DIR": str(data_dir), **{k.upper(): v for k, v in env.items()}},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _run_command(database_url: str, nats_url: str, data_dir: Path, *args: str) -> dict[str, int]:
    done = _command(
        data_dir,
        *args,
        crm_nats_url=nats_url,
        customer_database_url=database_url,
        crm_internal_secret=TEST_SECRET,
        crm_log_level="WARNING",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


async def test_a_restored_backup_is_erased_again(private_nats: NatsServer, tmp_path: Path) -> None:
    database = tmp_path / "customer.db"
    url = f"sqlite+aiosqlite:///{database}"
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat()
    async with running_service(SPEC, database_url=url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
        erased = (
            await stub.CreateCustomer(individual(address="北京市朝阳区建国路88号"), metadata=svc.md(RM1))
        ).customer
        kept = (await stub.CreateCustomer(individual(OTHER_ID, "13700137000"), metadata=svc.md(RM1))).customer
        await asyncio.sleep(0.2)  # the relay publishes the creations; the backup is taken after them
        _backup(database, tmp_path / "backup.db")
        request = pb.EraseCustomerRequest(customer_id=erased.id, reason="PIPL art. 47")
        await stub.EraseCustomer(request, metadata=svc.md(HEAD))
        found, _ = await published(private_nats.url, "crm.customer.customer.erased", erased.id, 1)
        assert len(found) == 1

    for leftover in (tmp_path / "customer.db-wal", tmp_path / "customer.db-shm"):
        leftover.unlink(missing_ok=True)
    shutil.copy(tmp_path / "backup.db", database)  # the restore: the erased customer's key is back
    async with running_service(SPEC, database_url=url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
        reveal = pb.RevealCustomerRequest(customer_id=erased.id, fields=["mobile"], purpose="核对恢复结果")
        assert dict((await stub.RevealCustomer(reveal, metadata=svc.md(HEAD))).values) == {"mobile": "13800138000"}

    summary = _run_command(url, private_nats.url, tmp_path, "--since", since)
    assert summary["erased_again"] == 1 and summary["events"] >= 1
    assert _run_command(url, private_nats.url, tmp_path, "--since", since)["erased_again"] == 0  # twice: no change

    async with running_service(SPEC, database_url=url, nats_url=private_nats.url, data_dir=tmp_path) as svc:
        stub = customer_service_pb2_grpc.CustomerServiceStub(svc.channel)
        again = (await stub.GetCustomer(pb.GetCustomerRequest(customer_id=erased.id), metadata=svc.md(HEAD))).customer
        assert again.erased and again.profile.mobile == again.profile.address == ""
        assert dict((await stub.RevealCustomer(reveal, metadata=svc.md(HEAD))).values) == {}
        history = (
            await stub.ListCustomerHistory(pb.ListCustomerHistoryRequest(customer_id=erased.id), metadata=svc.md(HEAD))
        ).changes
        entry = next(h for h in history if h.action == "erased")
        assert entry.actor == "system" and "restore" in entry.note
        other = (await stub.GetCustomer(pb.GetCustomerRequest(customer_id=kept.id), metadata=svc.md(RM1))).customer
        assert not other.erased and other.profile.mobile == "137****7000"


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    done = _command(tmp_path, "--since", crm_nats_url="nats://127.0.0.1:1")
    assert done.returncode == 2 and "usage: reapply-erasures" in done.stdout
