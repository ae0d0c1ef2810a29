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
from crm_platform.outbox import utcnow

log = logging.getLogger(__name__)

BATCH_ROWS = 1000
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

        Three batches are in hand at once: while one is written (a transaction from the checkpoint the one before
        committed; the writes stay in file order), the next is decided (duplicates, owners, numbers: reads and
        CPU) and the one after it prepared (validation, hashes, encryption: in the helper process). A batch is
        decided before the one ahead of it has committed, so it takes that batch's rows and customer numbers
        from memory (:meth:`ImportStore.decide_batch`).
        """
        rows = aiter(read_rows(self._store.file(job.id), job.format, job.facts, job.checkpoint_row, self._batch_rows))

        async def prepare_next() -> PreparedBatch | None:
            batch = await anext(rows, None)
            return None if batch is None else await self._store.prepare_batch(job, batch, utcnow())

        preparing = asyncio.create_task(prepare_next(), name=f"import-prepare-{job.id}")
        in_flight: _InFlight | None = None  # the batch being written
        try:
            while (prepared := await preparing) is not None:
                preparing = asyncio.create_task(prepare_next(), name=f"import-prepare-{job.id}")
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
            for task in (preparing, in_flight.writing if in_flight is not None else None):
                if task is not None and not task.done():
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
