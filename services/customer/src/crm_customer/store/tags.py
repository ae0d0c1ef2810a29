"""Tags of :class:`crm_customer.store.CustomerStore`: putting tags on customers, and the managed tag catalog."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.exc import IntegrityError

from crm_customer import events
from crm_customer.domain import Customer, FieldChange, ManagedTag, TagPlan
from crm_customer.store.tables import customer_managed_tags, customer_tags
from crm_platform.auth_context import Identity
from crm_platform.db import as_utc
from crm_platform.errors import AlreadyExists


class TagQueries:
    """Mixed into the store; uses its sessions, outbox and history helpers."""

    _sessions: Any
    _outbox: Any
    _update_versioned: Any
    _record: Any

    # The catalog

    async def define_managed_tag(self, tag: ManagedTag) -> ManagedTag:
        """Add a catalog entry and publish ``managed_tag.defined``; :class:`AlreadyExists` when its name is taken
        in the bank-wide catalog or the branch's (one name means one thing wherever it is applied)."""
        m = customer_managed_tags.c
        taken = select(m.name).where(m.name == tag.name)
        if tag.branch_id:  # a branch's entry may not shadow a bank-wide one; a bank-wide one clashes with any
            taken = taken.where(or_(m.branch_id == "", m.branch_id == tag.branch_id))
        try:
            async with self._sessions() as session, session.begin():
                if (await session.execute(taken.limit(1))).first() is not None:
                    raise AlreadyExists(f"the managed tag {tag.name!r} is already in the catalog")
                await session.execute(
                    insert(customer_managed_tags).values(
                        branch_id=tag.branch_id,
                        name=tag.name,
                        description=tag.description,
                        applicable_roles=json.dumps(list(tag.applicable_roles)),
                        created_by=tag.created_by,
                        created_at=tag.created_at,
                    )
                )
                await self._outbox.add(
                    session,
                    events.MANAGED_TAG_DEFINED,
                    events.managed_tag_defined(tag),
                    subject_id=f"{tag.branch_id}/{tag.name}",
                    actor=tag.created_by,
                )
        except IntegrityError:  # a concurrent definition of the same name won
            raise AlreadyExists(f"the managed tag {tag.name!r} is already in the catalog") from None
        return tag

    async def managed_catalog(self, identity: Identity) -> dict[str, ManagedTag]:
        """The managed tags the caller may see and apply: bank-wide and the caller's branch's, by name."""
        m = customer_managed_tags.c
        branches = [""] + ([identity.branch_id] if identity.branch_id else [])
        query = select(customer_managed_tags).where(m.branch_id.in_(branches))
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return {
            r.name: ManagedTag(
                name=r.name,
                description=r.description,
                applicable_roles=tuple(json.loads(r.applicable_roles)),
                branch_id=r.branch_id,
                created_by=r.created_by,
                created_at=as_utc(r.created_at),
            )
            for r in sorted(rows, key=lambda r: r.name)  # code point order whatever the database's collation
        }

    async def managed_on(self, customer_id: str) -> set[str]:
        """The managed tags a customer carries."""
        t = customer_tags.c
        query = select(t.tag).where(t.customer_id == customer_id, t.managed.is_(True))
        async with self._sessions() as session:
            return set((await session.execute(query)).scalars())

    # Tagging customers

    async def save_tags(self, identity: Identity, before: Customer, plan: TagPlan, now: dt.datetime) -> Customer:
        """Store the new tag set, its history and the ``customer.tagged`` event (a no-op when nothing changes)."""
        if not plan.added and not plan.removed:
            return before
        after = dataclasses.replace(before, tags=plan.tags, version=before.version + 1, updated_at=now)
        t = customer_tags.c
        managed = set(plan.managed)
        async with self._sessions() as session, session.begin():
            await self._update_versioned(session, before, version=after.version, updated_at=now)
            if plan.removed:
                await session.execute(delete(customer_tags).where(t.customer_id == before.id, t.tag.in_(plan.removed)))
            if plan.added:
                await session.execute(
                    insert(customer_tags),
                    [
                        {
                            "customer_id": before.id,
                            "tag": tag,
                            "created_by": identity.user_id,
                            "created_at": now,
                            "managed": tag in managed,
                        }
                        for tag in plan.added
                    ],
                )
            diff = [FieldChange("tags", ", ".join(before.tags), ", ".join(plan.tags))]
            await self._record(session, before.id, "tagged", identity.user_id, now, "", diff)
            await self._outbox.add(
                session,
                events.CUSTOMER_TAGGED,
                events.customer_tagged(after, plan.added, plan.removed, plan.managed),
                subject_id=before.id,
                actor=identity.user_id,
            )
        return after
