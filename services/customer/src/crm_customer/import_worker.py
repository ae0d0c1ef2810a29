"""The background worker of batch imports: takes queued jobs (and, at start, interrupted ones) and runs them a
batch of rows at a time; every batch commits with the job's checkpoint, so a killed process resumes where
its last batch committed and neither loses nor repeats a row."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from sqlalchemy.exc import IntegrityError

from crm_customer.domain.imports import DistributionPlan, plan_distribution, read_rows
from crm_customer.store.imports import QUEUED, RUNNING, ImportJob, ImportStore, PreparedBatch
from crm_platform.outbox import utcnow

log = logging.getLogger(__name__)

BATCH_ROWS = 1000
POLL_SECONDS = 5.0
ABANDONED_UPLOAD = dt.timedelta(hours=1)


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
            plan = self._plan(job)
            source = self._store.file(job.id)
            # Two batches in flight: the next one is read and prepared (validation, hashes, encryption: CPU)
            # while the database writes the previous one. The writes themselves stay in file order, one
            # transaction at a time, each from the checkpoint the previous one committed.
            writing: asyncio.Task[ImportJob] | None = None
            try:
                async for batch in read_rows(source, job.format, job.facts, job.checkpoint_row, self._batch_rows):
                    prepared = await self._store.prepare_batch(job, batch, utcnow())
                    if writing is not None:
                        job = await writing
                    writing = asyncio.create_task(self._apply(job, prepared, plan), name=f"import-{job.id}")
                if writing is not None:
                    job = await writing
                    writing = None
            finally:
                if writing is not None and not writing.done():
                    writing.cancel()
                    with contextlib.suppress(BaseException):
                        await writing
            finished = await self._store.finish(job, utcnow())
            log.info(
                "import finished",
                extra={"import_id": job.id, "imported": job.imported, "failed": job.failed, "dup": job.duplicates},
            )
            return finished

    async def _apply(self, job: ImportJob, batch: PreparedBatch, plan: DistributionPlan) -> ImportJob:
        try:
            return await self._store.apply_batch(job, batch, plan, utcnow())
        except IntegrityError:
            # A single create took an ID number or mobile of this batch meanwhile: the retry sees it as a duplicate.
            return await self._store.apply_batch(job, batch, plan, utcnow())

    @staticmethod
    def _plan(job: ImportJob) -> DistributionPlan:
        return plan_distribution(job.creator, job.distribution, job.distribution_team_id, job.staff)
