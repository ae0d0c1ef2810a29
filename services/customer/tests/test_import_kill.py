"""Chaos: SIGKILL the customer service process in the middle of an import, start it again, and the job resumes
from its last checkpoint: every row ends with exactly one outcome, every imported customer exists once with
one history row and one ``customer.created`` event — nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from import_files import RM1, Importer, check_exact_report, exact_file, precreate

from crm.common.v1.envelope_pb2 import EventEnvelope
from crm_platform.outbox import unbundled
from crm_testing.nats_server import NatsServer, free_port
from crm_testing.processes import spawned_children
from crm_testing.services import TEST_SECRET, RunningService

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.slow]


@asynccontextmanager
async def service_process(
    database_url: str, nats_url: str, data_dir: Path
) -> AsyncIterator[tuple[RunningService, asyncio.subprocess.Process]]:
    """``python -m crm_customer`` as production starts it, on its own ports; killed (if alive) at the end."""
    grpc_port = free_port()
    env = {
        **os.environ,
        "CRM_DATA_DIR": str(data_dir),
        "CRM_NATS_URL": nats_url,
        "CRM_INTERNAL_SECRET": TEST_SECRET,
        "CUSTOMER_DATABASE_URL": database_url,
        "CRM_CUSTOMER_GRPC_PORT": str(grpc_port),
        "CRM_CUSTOMER_METRICS_PORT": str(free_port()),
        "CRM_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "crm_customer", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(600):
            assert process.returncode is None, "the service exited during start-up"
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
        yield RunningService(channel, grpc_port, 0), process
    finally:
        await channel.close()
        if process.returncode is None:
            process.kill()
            await process.wait()


def _alive(pids: list[int]) -> bool:
    return any(Path(f"/proc/{pid}").exists() for pid in pids)


async def test_killed_mid_import_resumes_and_neither_loses_nor_duplicates(
    postgres_url: str, module_nats: NatsServer, tmp_path: Path
) -> None:
    plain_url = postgres_url.replace("postgresql+asyncpg", "postgresql")
    async with service_process(postgres_url, module_nats.url, tmp_path) as (svc, process):
        existing = await precreate(svc, 100)
        content, expected = exact_file(list(existing))
        job = (await Importer(svc).upload(RM1, content)).job
        db = await asyncpg.connect(plain_url)
        try:
            # Kill it well into the work, wherever it is: validating, writing a batch, committing.
            for _ in range(3000):
                done = await db.fetchval("SELECT processed FROM customer_imports WHERE id = $1", job.id)
                if done >= 2000:
                    break
                await asyncio.sleep(0.005)
            helpers = spawned_children(process.pid)
            assert helpers, "a 10,000-row import is prepared in the service's helper process"
            process.send_signal(signal.SIGKILL)
            await process.wait()
            # The helper holds the master keys: it must not outlive the service it worked for.
            for _ in range(100):
                if not _alive(helpers):
                    break
                await asyncio.sleep(0.05)
            assert not _alive(helpers), "the import helper outlived the service"
            processed, imported = await db.fetchrow(
                "SELECT processed, imported FROM customer_imports WHERE id = $1", job.id
            )
            assert 0 < processed < 10_000, "the kill must land mid-import"
            # What committed is whole: as many customers and report rows as the checkpoint says.
            assert await db.fetchval("SELECT count(*) FROM customers") == 100 + imported
            assert await db.fetchval("SELECT count(*) FROM customer_import_rows WHERE job_id = $1", job.id) == processed
        finally:
            await db.close()

    async with service_process(postgres_url, module_nats.url, tmp_path) as (svc, _):
        imports = Importer(svc)
        finished = await imports.finished(RM1, job.id, timeout=120)
        assert (finished.processed, finished.imported, finished.failed, finished.duplicates) == (
            10_000,
            9_500,
            300,
            200,
        )
        check_exact_report(await imports.rows(RM1, job.id), expected, existing)
        db = await asyncpg.connect(plain_url)
        try:
            assert await db.fetchval("SELECT count(*) FROM customers") == 9_600
            assert await db.fetchval("SELECT count(DISTINCT id_number_hash) FROM customers") == 9_500
            assert (
                await db.fetchval("SELECT count(*) FROM customer_history WHERE note = $1", f"import {job.id}") == 9_500
            )
            events = unbundled(await db.fetch("SELECT id, subject, envelope FROM outbox"))
            created = [EventEnvelope.FromString(e[2]) for e in events if e[1] == "crm.customer.customer.created"]
            assert len({e.id for e in created}) == len({e.subject_id for e in created}) == len(created) == 9_600
            assert await db.fetchval("SELECT count(*) FROM customer_import_chunks") == 0, (
                "the file is dropped at the end"
            )
        finally:
            await db.close()
