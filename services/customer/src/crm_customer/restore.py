"""``python -m crm_customer reapply-erasures [--since TIME]``: after the customer database was restored from a
backup, erase again every customer whose erasure the backup predates.

Crypto-shredding destroys a customer's data key, but a backup taken before the erasure still holds it: restored,
the personal data is readable again. Every erasure was published as ``crm.customer.customer.erased`` to the
``CRM_CUSTOMER`` stream, which JetStream keeps as long as backups are kept (30 days). This command reads those
events from ``--since`` (an ISO 8601 time: the backup's time; default the whole stream) and erases each
customer that the restored database still holds unerased — with its merged files, a history entry and a new
``customer.erased`` event each (published by the service's relay when it next runs). Run it with the service
stopped or running; running it twice erases nothing twice. It prints a JSON summary.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, DeliverPolicy

from crm.common.v1 import envelope_pb2
from crm.customer.v1 import events_pb2
from crm_customer.config import Settings
from crm_customer.events import CUSTOMER_ERASED
from crm_customer.store import CustomerStore
from crm_platform.auth_context import SYSTEM
from crm_platform.bus import Bus
from crm_platform.db import session_factory
from crm_platform.errors import NotFound
from crm_platform.outbox import Outbox, utcnow

if TYPE_CHECKING:
    from crm_platform.config import CommonSettings
    from crm_platform.runtime import ServiceSpec

log = logging.getLogger(__name__)

_BATCH = 500
_MAX_IDLE_FETCHES = 5


def _since(argv: list[str]) -> dt.datetime | None:
    if not argv:
        return None
    if len(argv) != 2 or argv[0] != "--since":
        raise ValueError("usage: reapply-erasures [--since 2026-11-01T00:00:00Z]")
    since = dt.datetime.fromisoformat(argv[1].replace("Z", "+00:00"))
    return since if since.tzinfo else since.replace(tzinfo=dt.UTC)


async def erased_customer_ids(nats_url: str, since: dt.datetime | None) -> list[tuple[str, str]]:
    """``(customer id, event id)`` of every ``customer.erased`` event in the stream (from ``since``), oldest first."""
    bus = Bus(nats_url, name="crm-customer-reapply-erasures")
    await bus.connect(attempts=3)
    found: list[tuple[str, str]] = []
    try:
        config = (
            ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since)
            if since is not None
            else ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        )
        sub = await bus.js.pull_subscribe(CUSTOMER_ERASED, durable=None, stream="CRM_CUSTOMER", config=config)
        try:
            idle = 0
            while (await sub.consumer_info()).num_pending > 0:
                try:
                    messages = await sub.fetch(_BATCH, timeout=2)
                except (TimeoutError, NatsTimeoutError):
                    idle += 1
                    if idle >= _MAX_IDLE_FETCHES:  # events pending that never come: say so rather than hang
                        raise RuntimeError("JetStream reports erasure events it does not deliver") from None
                    continue
                idle = 0
                for message in messages:
                    envelope = envelope_pb2.EventEnvelope.FromString(message.data)
                    payload = events_pb2.CustomerErased()
                    envelope.payload.Unpack(payload)
                    found.append((payload.customer_id, envelope.id))
                    await message.ack()
        finally:
            await sub.unsubscribe()
    finally:
        await bus.close()
    return found


async def reapply_erasures(spec: ServiceSpec, settings: CommonSettings, argv: list[str]) -> int:
    """The command (see the module's text); exit code 0, or 2 for bad arguments."""
    from crm_platform.runtime import open_database

    assert isinstance(settings, Settings)
    try:
        since = _since(argv)
    except ValueError as exc:
        print(f"crm-customer: {exc}")
        return 2
    events = await erased_customer_ids(settings.nats_url, since)
    engine = await open_database(spec, settings)
    summary = {"events": len(events), "erased_again": 0, "already_erased": 0, "unknown": 0}
    try:
        store = CustomerStore(session_factory(engine), Outbox(spec.domain), settings.keyring())
        for customer_id, event_id in events:
            try:
                customer = await store.get(SYSTEM, customer_id)
            except NotFound:  # removed (a rolled-back import's customer) or never in this database
                summary["unknown"] += 1
                continue
            if customer.erased_at is not None:
                summary["already_erased"] += 1
                continue
            reason = f"erasure re-applied after a database restore (event {event_id})"
            await store.erase(SYSTEM, customer, reason, utcnow())
            summary["erased_again"] += 1
            log.warning("erasure re-applied", extra={"customer_id": customer_id, "event_id": event_id})
    finally:
        await engine.dispose()
    print(json.dumps(summary))
    return 0
