"""A bare outbox relay process for the chaos test: publishes a database's outbox to NATS until killed.

Usage: python relay_process.py DATABASE_URL NATS_URL STREAM SUBJECT_ROOT
"""

from __future__ import annotations

import asyncio
import sys

from crm_platform.bus import Bus, StreamSpec
from crm_platform.db import create_engine, normalise_url
from crm_platform.outbox import OutboxRelay


async def main(database_url: str, nats_url: str, stream: str, root: str) -> None:
    """Publish small batches forever, two in flight as the running relay does (the test kills this process
    mid-way: wherever it lands, a batch may be claimed, written to the broker, acknowledged or marked)."""
    engine = create_engine(normalise_url(database_url))
    bus = Bus(nats_url, name="chaos-relay")
    await bus.connect(attempts=3)
    await bus.ensure_streams((StreamSpec(stream, (f"{root}.>",)),))
    relay = OutboxRelay(engine, bus, batch_size=100)
    print("relay started", flush=True)
    while True:
        if not await relay.publish_pending():
            await asyncio.sleep(0.01)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
