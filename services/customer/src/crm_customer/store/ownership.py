"""Ownership writes of :class:`crm_customer.store.CustomerStore`: one (re)assignment or reclaim per transaction,
and the scoped batch read bulk assignment and holdings feeds start from."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from crm_customer import events
from crm_customer.domain import Customer, FieldChange, Ownership
from crm_customer.store.tables import customers
from crm_platform.auth_context import Identity


class OwnershipQueries:
    """Mixed into the store; uses its sessions, outbox, select, scope and history helpers."""

    _sessions: Any
    _outbox: Any
    _select: Any
    _scoped: Any
    _load: Any
    _update_versioned: Any
    _record: Any

    async def visible(self, identity: Identity, customer_ids: Sequence[str]) -> dict[str, Customer]:
        """The asked customers that exist inside the caller's scope, by id (others are simply absent)."""
        if not customer_ids:
            return {}
        query = self._select().where(customers.c.id.in_(list(customer_ids)), self._scoped(identity))
        async with self._sessions() as session:
            loaded = await self._load(session, (await session.execute(query)).all())
        return {c.id: c for c in loaded}

    async def save_ownership(
        self, identity: Identity, before: Customer, ownership: Ownership, action: str, reason: str, now: dt.datetime
    ) -> Customer:
        """Store a new owner (or the branch pool), its history and the ``customer.assigned`` event."""
        after = dataclasses.replace(
            before, owner_id=ownership.owner_id, team_id=ownership.team_id, version=before.version + 1, updated_at=now
        )
        diff = [
            FieldChange(name, old, new)
            for name, old, new in (
                ("owner_id", before.owner_id, after.owner_id),
                ("team_id", before.team_id, after.team_id),
            )
            if old != new
        ]
        async with self._sessions() as session, session.begin():
            await self._update_versioned(
                session, before, owner_id=after.owner_id, team_id=after.team_id, version=after.version, updated_at=now
            )
            await self._record(session, before.id, action, identity.user_id, now, reason, diff)
            await self._outbox.add(
                session,
                events.CUSTOMER_ASSIGNED,
                events.customer_assigned(after, before.owner_id, reason),
                subject_id=before.id,
                actor=identity.user_id,
            )
        return after


async def move_owner_team(session: Any, owner_id: str, team_id: str, as_of: dt.datetime) -> None:
    """A staff member moved to team ``team_id``: the customers they own are the new team's (a customer's team is
    its owner's). Not a change of the customer files — no version, history or event: each other service's org
    directory moves its own copy on the same identity event."""
    from sqlalchemy import update

    c = customers.c
    await session.execute(update(customers).where(c.owner_id == owner_id, c.team_id != team_id).values(team_id=team_id))
