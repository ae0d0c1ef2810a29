"""Revoked login sessions, shared by every gateway replica.

An access token is checked offline (no database per request), so a logout must reach every replica's memory.
A revocation is recorded in the gateway database (the session's refresh tokens get ``revoked_at``) together
with a ``crm.identity.session.revoked`` event in the outbox, in one transaction; the relay publishes it to
JetStream. Every replica:

* subscribes to that subject (a plain NATS subscription: each replica must see every revocation, which a
  shared durable consumer would not give) and adds the session to its in-memory set;
* loads the sessions revoked within the last access-token lifetime from the database when it starts (after
  subscribing, so none falls between the two), and again every ``resync_seconds`` — which bounds how long a
  revocation missed during a NATS outage goes unseen.

Entries are dropped once no access token of the session can still be valid (issued before the revocation,
so expired within the access-token lifetime after it). The per-request check is one set membership test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from google.protobuf.message import DecodeError

from crm.common.v1 import envelope_pb2

log = logging.getLogger(__name__)

SESSION_REVOKED = "crm.identity.session.revoked"


class Revocations:
    """The set of revoked session ids; each is forgotten one access-token lifetime after its revocation."""

    def __init__(self, access_ttl_seconds: float) -> None:
        self._ttl = access_ttl_seconds
        self._until: dict[str, float] = {}
        self._next_prune = 0.0

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._until

    def __len__(self) -> int:
        return len(self._until)

    def add(self, session_id: str, revoked_at: float | None = None) -> None:
        """Revoke ``session_id`` (revoked at ``revoked_at``, a Unix time; default now)."""
        now = time.time()
        until = (revoked_at if revoked_at is not None else now) + self._ttl
        if until <= now:
            return  # every access token of the session has expired already
        self._until[session_id] = max(until, self._until.get(session_id, 0.0))
        if now >= self._next_prune:
            self._until = {k: v for k, v in self._until.items() if v > now}
            self._next_prune = now + 60

    def update(self, revoked: Iterable[tuple[str, float]]) -> None:
        """Add many ``(session_id, revoked_at)`` pairs."""
        for session_id, revoked_at in revoked:
            self.add(session_id, revoked_at)


class RevocationFeed:
    """Keeps a :class:`Revocations` set current from NATS and, as a safety net, from the database."""

    def __init__(
        self,
        revocations: Revocations,
        nats: Any,
        load: Callable[[float], Awaitable[list[tuple[str, float]]]],
        *,
        resync_seconds: float = 30.0,
    ) -> None:
        self._revocations = revocations
        self._nats = nats
        self._load = load
        self._resync = resync_seconds
        self._subscription: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe, then load what the database holds, then re-sync periodically in the background."""
        self._subscription = await self._nats.subscribe(SESSION_REVOKED, cb=self._on_message)
        await self.sync()
        self._task = asyncio.create_task(self._resync_loop(), name="revocation-resync")

    async def sync(self) -> None:
        """Add every session revoked within the last access-token lifetime (per the database)."""
        since = time.time() - self._revocations._ttl
        self._revocations.update(await self._load(since))

    async def stop(self) -> None:
        """Unsubscribe and stop re-syncing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()

    async def _on_message(self, msg: Any) -> None:
        try:
            envelope = envelope_pb2.EventEnvelope.FromString(msg.data)
        except DecodeError:  # a malformed message must not stop the subscription
            log.warning("malformed session revocation ignored")
            return
        if envelope.subject_id:
            revoked_at = envelope.occurred_at.ToMicroseconds() / 1e6 if envelope.HasField("occurred_at") else None
            self._revocations.add(envelope.subject_id, revoked_at)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self._resync)
            try:
                await self.sync()
            except Exception:  # the next round tries again; NATS keeps delivering meanwhile
                log.warning("revocation re-sync failed", exc_info=True)
