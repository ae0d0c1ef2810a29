"""Merge writes of :class:`crm_customer.store.CustomerStore`: a duplicate file merged into a survivor, in one
transaction with both files' history and the ``customer.merged`` event (the rules are in ``domain.merge``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_customer import events
from crm_customer.domain import Customer, FieldChange, Holding, MergePlan, aum_of, holdings_to_move
from crm_customer.store.tables import customer_holdings, customer_tags, customers
from crm_platform.auth_context import Identity


def _holding(row: Any) -> Holding:
    return Holding(
        row.product_code,
        row.product_name,
        row.product_type,
        decimal.Decimal(row.amount).quantize(decimal.Decimal("0.01")),
        row.currency,
        row.start_date,
        row.maturity_date,
    )


class MergeQueries:
    """Mixed into the store; uses its sessions, outbox, encryption, duplicate check and history helpers."""

    _sessions: Any
    _outbox: Any
    _update_versioned: Any
    _reject_duplicates: Any
    _data_key: Any
    _profile_columns: Any
    _record: Any

    async def save_merge(
        self,
        identity: Identity,
        survivor: Customer,
        duplicate: Customer,
        plan: MergePlan,
        reason: str,
        now: dt.datetime,
    ) -> Customer:
        """Store a planned merge; answer the survivor after it.

        Both files are updated only at the versions they were read at (else :class:`Conflict`, nothing merged).
        The duplicate goes first: it gives up its lookup hashes and credit code before the survivor takes them,
        because the unique indexes on those columns are checked statement by statement.
        """
        async with self._sessions() as session, session.begin():
            await self._update_versioned(
                session,
                duplicate,
                merged_into=survivor.id,
                merged_at=now,
                id_number_hash=None,
                mobile_hash=None,
                credit_code=None,
                version=plan.duplicate.version,
                updated_at=now,
            )
            # A third file that took a filled value meanwhile refuses the merge as a create would (ALREADY_EXISTS).
            await self._reject_duplicates(session, identity, plan.survivor.profile, exclude_id=survivor.id)
            moved, held, kept = await self._move_holdings(session, survivor.id, duplicate.id, now)
            after = dataclasses.replace(plan.survivor, aum=aum_of(held), product_count=len(held))
            # The whole profile is re-encrypted under the survivor's own data key, filled values included.
            data_key = await self._data_key(session, survivor.id)
            await self._update_versioned(
                session,
                survivor,
                version=after.version,
                updated_at=now,
                aum=after.aum,
                product_count=after.product_count,
                **self._profile_columns(survivor.id, data_key, after.profile),
            )
            if moved:
                await session.execute(
                    update(customers)
                    .where(customers.c.id == duplicate.id)
                    .values(aum=aum_of(kept), product_count=len(kept))
                )
            await self._copy_tags(session, duplicate.id, survivor.id, plan.tags_added)
            codes = [h.product_code for h in moved]
            actor = identity.user_id
            gained = _survivor_changes(survivor, plan, codes)
            await self._record(session, survivor.id, "merged", actor, now, reason, gained)
            gone = _duplicate_changes(duplicate, plan, codes)
            await self._record(session, duplicate.id, "merged", actor, now, reason, gone)
            await self._outbox.add(
                session,
                events.CUSTOMER_MERGED,
                events.customer_merged(plan, codes, identity.user_id),
                subject_id=survivor.id,
                actor=identity.user_id,
            )
        return after

    @staticmethod
    async def _move_holdings(
        session: AsyncSession, survivor_id: str, duplicate_id: str, now: dt.datetime
    ) -> tuple[list[Holding], list[Holding], list[Holding]]:
        """Move the duplicate's holdings of products the survivor lacks; answer (moved, the survivor's holdings
        after, the duplicate's kept)."""
        h = customer_holdings.c
        query = select(customer_holdings).where(h.customer_id.in_([survivor_id, duplicate_id]))
        rows = (await session.execute(query)).all()
        held = [_holding(r) for r in rows if r.customer_id == survivor_id]
        theirs = [_holding(r) for r in rows if r.customer_id == duplicate_id]
        moved = holdings_to_move(held, theirs)
        if moved:
            await session.execute(
                update(customer_holdings)
                .where(h.customer_id == duplicate_id, h.product_code.in_([m.product_code for m in moved]))
                .values(customer_id=survivor_id, updated_at=now)
            )
        codes = {m.product_code for m in moved}
        return moved, held + moved, [x for x in theirs if x.product_code not in codes]

    @staticmethod
    async def _copy_tags(session: AsyncSession, duplicate_id: str, survivor_id: str, tags: tuple[str, ...]) -> None:
        """Put the duplicate's tags the survivor lacks on the survivor, keeping who applied them and whether they
        are managed (the duplicate keeps its own)."""
        if not tags:
            return
        t = customer_tags.c
        query = select(t.tag, t.created_by, t.created_at, t.managed).where(
            t.customer_id == duplicate_id, t.tag.in_(tags)
        )
        rows = (await session.execute(query)).all()
        await session.execute(
            insert(customer_tags),
            [
                {
                    "customer_id": survivor_id,
                    "tag": r.tag,
                    "created_by": r.created_by,
                    "created_at": r.created_at,
                    "managed": r.managed,
                }
                for r in rows
            ],
        )


def _survivor_changes(before: Customer, plan: MergePlan, moved: list[str]) -> list[FieldChange]:
    """The survivor's history: which file it absorbed, the filled fields (masked), tags and holdings gained."""
    diff = [FieldChange("merged_from", "", plan.duplicate.id), *plan.filled]
    if plan.tags_added:
        diff.append(FieldChange("tags", ", ".join(before.tags), ", ".join(plan.survivor.tags)))
    if moved:
        diff.append(FieldChange("holdings", "", ", ".join(moved)))
    return diff


def _duplicate_changes(before: Customer, plan: MergePlan, moved: list[str]) -> list[FieldChange]:
    """The duplicate's history: where it went, the lookup value it gave up, the holdings that left it."""
    diff = [FieldChange("merged_into", "", plan.survivor.id)]
    if before.profile.credit_code:
        diff.append(FieldChange("credit_code", before.profile.credit_code, ""))
    if moved:
        diff.append(FieldChange("holdings", ", ".join(moved), ""))
    return diff
