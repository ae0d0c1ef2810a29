"""The NATS JetStream connection every part shares, and the streams of the CRM's domains."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)


class PublishError(Exception):
    """JetStream refused a message of a batch (or no stream captures its subject)."""


class _Batch:
    """The acknowledgements still awaited for one published batch."""

    __slots__ = ("done", "pending")

    def __init__(self, size: int) -> None:
        self.pending = size
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


@dataclass(frozen=True)
class StreamSpec:
    """A JetStream stream: its name and the subjects it captures."""

    name: str
    subjects: tuple[str, ...]


DOMAIN_STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("CRM_IDENTITY", ("crm.identity.>",)),
    StreamSpec("CRM_CUSTOMER", ("crm.customer.>",)),
    StreamSpec("CRM_INTERACTION", ("crm.interaction.>", "crm.task.>")),
    StreamSpec("CRM_OPPORTUNITY", ("crm.opportunity.>", "crm.campaign.>")),
    StreamSpec("CRM_TICKET", ("crm.ticket.>",)),
    StreamSpec("CRM_NOTIFICATION", ("crm.notification.>",)),
    StreamSpec("CRM_DLQ", ("crm.dlq.>",)),
)


class Bus:
    """One NATS connection with JetStream, reconnecting forever once established."""

    def __init__(self, servers: str, name: str, *, replicas: int = 1, max_age_days: int = 30) -> None:
        self._servers = [s.strip() for s in servers.split(",") if s.strip()]
        self._name = name
        self._replicas = replicas
        self._max_age_seconds = max_age_days * 86400
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._ack_prefix = ""
        self._batches: dict[str, _Batch] = {}
        self._batch_numbers = itertools.count()

    @property
    def nc(self) -> Client:
        """The NATS client; raises before :meth:`connect`."""
        if self._nc is None:
            raise RuntimeError("bus is not connected")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context; raises before :meth:`connect`."""
        if self._js is None:
            raise RuntimeError("bus is not connected")
        return self._js

    @property
    def connected(self) -> bool:
        """Whether the connection is up right now."""
        return self._nc is not None and self._nc.is_connected

    async def connect(self, attempts: int = 0) -> None:
        """Connect, retrying with back-off (``attempts`` = 0 retries forever)."""
        delay = 0.2
        tries = 0
        while True:
            tries += 1
            try:
                self._nc = await nats.connect(
                    servers=self._servers,
                    name=self._name,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
                self._js = self._nc.jetstream(timeout=5)
                return
            except Exception as exc:
                if attempts and tries >= attempts:
                    raise
                log.warning("NATS not reachable; retrying", extra={"error": repr(exc), "retry_in": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def publish_batch(
        self, messages: Sequence[tuple[str, str, bytes]], timeout: float, *, sent: Callable[[], object] | None = None
    ) -> None:
        """Publish ``(event id, subject, payload)`` messages to JetStream, then wait (at most ``timeout``
        seconds in all) until the stream has acknowledged every one; raise if any was refused or missing.
        ``sent`` is called once every message is written, before the acknowledgements are awaited (a caller
        may start on its next batch then).

        Each message carries ``Nats-Msg-Id`` = event id, so a re-publish is dropped by the stream. Why not
        ``js.publish_async``: it costs a future, a semaphore wait, a NUID and a parsed ``PubAck`` per message,
        which measured as half of the relay's time; here a batch has one future and an acknowledgement is a
        counter decrement (its JSON is parsed only when it is an error). The messages are written in order
        before the first acknowledgement is awaited, so batches published one after another keep their order.
        """
        if not messages:
            return
        nc = self.nc
        if not self._ack_prefix:
            prefix = nc.new_inbox()
            await nc.subscribe(f"{prefix}.>", cb=self._on_ack)
            self._ack_prefix = prefix
        token = str(next(self._batch_numbers))
        batch = _Batch(len(messages))
        self._batches[token] = batch
        reply = f"{self._ack_prefix}.{token}."
        try:
            async with asyncio.timeout(timeout):
                for index, (event_id, subject, payload) in enumerate(messages):
                    headers = {"Nats-Msg-Id": event_id, "Crm-Event-Type": subject}
                    await nc.publish(subject, payload, reply=f"{reply}{index}", headers=headers)
                if sent is not None:
                    sent()
                await batch.done
        finally:
            del self._batches[token]

    async def _on_ack(self, msg: Msg) -> None:
        token = msg.subject[len(self._ack_prefix) + 1 :].partition(".")[0]
        batch = self._batches.get(token)
        if batch is None or batch.done.done():
            return  # a late answer to a batch that already failed or timed out
        data = msg.data
        if data.startswith(b'{"stream":') and b'"error"' not in data:  # the usual answer, without parsing it
            self._acked(batch)
            return
        if not data:  # a status reply without a body: 503 no responders, no stream captures the subject
            status = (msg.headers or {}).get("Status", "?")
            batch.done.set_exception(PublishError(f"no stream acknowledged {msg.subject} (status {status})"))
            return
        try:
            answer = json.loads(data)
        except ValueError:
            answer = {"error": data.decode(errors="replace")}
        if isinstance(answer, dict) and "stream" in answer and "error" not in answer:
            self._acked(batch)
            return
        error = answer.get("error", answer) if isinstance(answer, dict) else answer
        batch.done.set_exception(PublishError(f"JetStream refused a message: {error}"))

    @staticmethod
    def _acked(batch: _Batch) -> None:
        batch.pending -= 1
        if batch.pending == 0:
            batch.done.set_result(None)

    async def ensure_streams(self, specs: tuple[StreamSpec, ...] = DOMAIN_STREAMS) -> None:
        """Create each stream that does not exist yet (idempotent; safe from many replicas at once)."""
        for spec in specs:
            try:
                await self.js.stream_info(spec.name)
                continue
            except NotFoundError:
                pass
            config = StreamConfig(
                name=spec.name,
                subjects=list(spec.subjects),
                storage=StorageType.FILE,
                num_replicas=self._replicas,
                max_age=self._max_age_seconds,
                duplicate_window=120,
            )
            try:
                await self.js.add_stream(config)
                log.info("created stream", extra={"stream": spec.name})
            except Exception:  # noqa: BLE001 - a replica racing us may have created it; check once more
                await self.js.stream_info(spec.name)

    async def close(self) -> None:
        """Drain subscriptions and pending publishes, then close."""
        if self._nc is not None and not self._nc.is_closed:
            try:
                await asyncio.wait_for(self._nc.drain(), timeout=5)
            except Exception:  # noqa: BLE001 - closing is best effort at shutdown
                with contextlib.suppress(Exception):  # e.g. the broker is gone while reconnecting
                    await self._nc.close()
        self._nc = None
        self._js = None
        self._ack_prefix = ""

    async def _on_error(self, exc: Exception) -> None:
        log.warning("NATS error", extra={"error": repr(exc)})

    async def _on_disconnected(self) -> None:
        log.warning("NATS disconnected")

    async def _on_reconnected(self) -> None:
        log.info("NATS reconnected")
