"""The background worker of batch imports: takes queued jobs (and, at start, interrupted ones) and runs them a
batch of rows at a time; every batch commits with the job's checkpoint, so a killed process resumes where
its last batch committed and neither loses nor repeats a row."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import NamedTuple

from sqlalchemy.exc import IntegrityError

from crm_customer.domain.imports import DistributionPlan, plan_distribution, read_rows
from crm_customer.store.imports import QUEUED, RUNNING, DecidedBatch, ImportJob, ImportStore, PreparedBatch
from crm_platform.heap import batch_collection
from crm_platform.outbox import utcnow

log = logging.getLogger(__name__)

BATCH_ROWS = 1000
PREPARE_AHEAD = 2  # batches handed to the helper and not yet taken back: the one it prepares, the one queued
POLL_SECONDS = 5.0
ABANDONED_UPLOAD = dt.timedelta(hours=1)


class _InFlight(NamedTuple):
    """A batch being written: as prepared, as decided, and the task writing it."""

    prepared: PreparedBatch
    decided: DecidedBatch
    writing: asyncio.Task[ImportJob]


class ImportWorker:
    """Runs import jobs one after another in this process; replicas share jobs through the store's claims."""

    def __init__(self, store: ImportStore, batch_rows: int = BATCH_ROWS, poll_seconds: float = POLL_SECONDS) -> None:
        self._store = store
        self._batch_rows = batch_rows
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A job was queued: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Resume unfinished jobs, then take new ones as they come, until cancelled (which also stops the store's
        helper process)."""
        try:
            await self._run()
        finally:
            self._store.preparation.close()

    async def _run(self) -> None:
        backoff = 0.5
        with contextlib.suppress(Exception):
            await self._store.forget_abandoned_uploads(utcnow() - ABANDONED_UPLOAD)
        while True:
            self._wake.clear()
            try:
                failed = 0
                for job_id in await self._store.unfinished():
                    try:
                        await self.process(job_id)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        # One job's failure must not hold up the others; it is retried after the backoff.
                        failed += 1
                        log.exception("import job failed", extra={"import_id": job_id})
                if failed:
                    raise RuntimeError(f"{failed} import job(s) failed")
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("import worker retrying", extra={"retry_in": backoff}, exc_info=True)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_seconds)

    async def process(self, job_id: str) -> ImportJob | None:
        """Run one job to its end if no other worker holds it; return it finished (``None`` when not ours)."""
        async with self._store.claim(job_id) as ours:
            if not ours:
                return None
            job = await self._store.load(job_id)
            if job is None or job.status not in (QUEUED, RUNNING):
                return job
            if job.status == QUEUED:
                await self._store.start(job_id, utcnow())
                job = await self._store.load(job_id)
                assert job is not None
            if job.checkpoint_row > 1:
                log.info("resuming import", extra={"import_id": job.id, "after_row": job.checkpoint_row})
            with batch_collection():  # fewer collections while the job's batches are in flight (crm_platform.heap)
                job = await self._batches(job, self._plan(job))
            finished = await self._store.finish(job, utcnow())
            log.info(
                "import finished",
                extra={"import_id": job.id, "imported": job.imported, "failed": job.failed, "dup": job.duplicates},
            )
            await self._store.refresh_statistics(finished)
            return finished

    async def _batches(self, job: ImportJob, plan: DistributionPlan) -> ImportJob:
        """Run the job's batches from its checkpoint; return the job after the last.

        While one batch is written (a transaction from the checkpoint the one before committed; the writes stay
        in file order), the next is decided (duplicates, owners, numbers: reads and CPU) and the :data:`PREPARE_AHEAD`
        after it are prepared (validation, hashes, encryption: in the helper process, which finds the next batch
        queued when it returns one, rather than waiting for this process to come round). A batch is decided
        before the one ahead of it has committed, so it takes that batch's rows and customer numbers from memory
        (:meth:`ImportStore.decide_batch`).
        """
        rows = read_rows(
            self._store.file(job.id),
            job.format,
            job.facts,
            job.checkpoint_row,
            self._batch_rows,
            self._store.preparation.xlsx_rows,
        )
        # Batches in file order, each as the future of its preparation; a failure to read the file as a failed
        # future in its place; ``None`` after the last.
        prepared_ahead: asyncio.Queue[asyncio.Future[PreparedBatch] | None] = asyncio.Queue()
        slots = asyncio.Semaphore(PREPARE_AHEAD)

        async def feed() -> None:
            # The helper gets the next batch while it still prepares one, so it never waits for this process.
            try:
                async for batch in rows:
                    await slots.acquire()
                    preparing = self._store.prepare_batch(job, batch, utcnow())
                    prepared_ahead.put_nowait(asyncio.create_task(preparing, name=f"import-prepare-{job.id}"))
            except Exception as exc:  # noqa: BLE001 - handed to the loop below, which raises it
                failed: asyncio.Future[PreparedBatch] = asyncio.get_running_loop().create_future()
                failed.set_exception(exc)
                prepared_ahead.put_nowait(failed)
            prepared_ahead.put_nowait(None)

        async def next_prepared() -> PreparedBatch | None:
            preparing = await prepared_ahead.get()
            if preparing is None:
                return None
            prepared = await preparing
            slots.release()
            return prepared

        feeding = asyncio.create_task(feed(), name=f"import-read-{job.id}")
        in_flight: _InFlight | None = None  # the batch being written
        try:
            while True:
                try:
                    prepared = await next_prepared()
                except Exception:
                    if in_flight is not None:  # a failure to read or prepare further on: keep the batch decided
                        await self._written(job, in_flight, plan)
                        in_flight = None
                    raise
                if prepared is None:
                    break
                before = in_flight.decided if in_flight is not None else None
                decided = await self._store.decide_batch(job, prepared, plan, utcnow(), before)
                if in_flight is not None:
                    job, retried = await self._written(job, in_flight, plan)
                    if retried:  # the batch before was decided again: so is this one, on what it became
                        decided = await self._store.decide_batch(job, prepared, plan, utcnow())
                writing = asyncio.create_task(self._store.write_batch(job, decided), name=f"import-{job.id}")
                in_flight = _InFlight(prepared, decided, writing)
            if in_flight is not None:
                job, _ = await self._written(job, in_flight, plan)
                in_flight = None
        finally:
            pending = [feeding] if in_flight is None else [feeding, in_flight.writing]
            while not prepared_ahead.empty():
                if (task := prepared_ahead.get_nowait()) is not None:
                    pending.append(task)
            for task in pending:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
        return job

    async def _written(self, job: ImportJob, in_flight: _InFlight, plan: DistributionPlan) -> tuple[ImportJob, bool]:
        """The job once the batch in flight committed, and whether it had to be decided again: a single create took
        one of its ID numbers, mobiles or customer numbers since it was decided, which the batch, decided again,
        sees as a duplicate (or avoids)."""
        try:
            return await in_flight.writing, False
        except IntegrityError:
            return await self._store.apply_batch(job, in_flight.prepared, plan, utcnow()), True

    @staticmethod
    def _plan(job: ImportJob) -> DistributionPlan:
        return plan_distribution(job.creator, job.distribution, job.distribution_team_id, job.staff)
