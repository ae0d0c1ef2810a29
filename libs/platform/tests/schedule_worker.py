"""A schedule runner process for the exactly-once tests: runs a database's due items until SIGTERM (or SIGKILL).

Usage: python schedule_worker.py DATABASE_URL NAME

The handler writes one effect row per run — in ``schedule_effects``, which has no unique constraint, so a second
run of the same version would show as a second row — and one outbox event, both with the session it is given.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from sqlalchemy import Column, Integer, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from crm.common.v1 import paging_pb2
from crm_platform.db import create_engine, is_postgres, normalise_url
from crm_platform.outbox import Outbox
from crm_platform.schedule import Handler, ScheduledItem, ScheduleRunner
from crm_platform.tuning import run

KIND = "test.reminder"
SUBJECT = "crm.test.reminder.due"

effects_metadata = MetaData()
effects = Table(
    "schedule_effects",
    effects_metadata,
    Column("key", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("runner", String(50), nullable=False),
    Column("note", String(200), nullable=False),
)


def reminder(runner: str, outbox: Outbox | None = None) -> Handler:
    """The handler: an effect row naming ``runner``, and an outbox event, in the run's transaction."""
    outbox = outbox or Outbox("test")

    async def remind(session: AsyncSession, item: ScheduledItem) -> None:
        note = str(item.payload.get("note", ""))
        await session.execute(insert(effects).values(key=item.key, version=item.version, runner=runner, note=note))
        message = paging_pb2.PageInfo(next_page_token=item.key)
        await outbox.add(session, SUBJECT, message, subject_id=item.key, actor="scheduler")

    return remind


async def main(url: str, name: str) -> None:
    """Run until SIGTERM; print ``ready`` once started."""
    database = normalise_url(url)
    options = {"connect_args": {"server_settings": {"application_name": name}}} if is_postgres(database) else {}
    engine = create_engine(database, **options)
    runner = ScheduleRunner(engine, {KIND: reminder(name)}, batch_size=200, poll_interval=0.05, name=name)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    runner.start()
    print("ready", flush=True)
    await stop.wait()
    await runner.stop()
    await engine.dispose()


if __name__ == "__main__":
    run(main(sys.argv[1], sys.argv[2]), "uvloop")
