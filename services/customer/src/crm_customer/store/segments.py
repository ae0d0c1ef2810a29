"""Saved segment queries of :class:`crm_customer.store.CustomerStore`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from sqlalchemy import ColumnElement, insert, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from crm_customer.domain import Segment, SegmentCriteria
from crm_customer.store.tables import customer_segments
from crm_platform.auth_context import Identity
from crm_platform.db import as_utc
from crm_platform.errors import AlreadyExists, NotFound


class SegmentQueries:
    """Saves and reads segments (mixed into the store; uses its sessions)."""

    _sessions: Any

    async def create_segment(self, segment: Segment) -> Segment:
        """Save a segment; :class:`AlreadyExists` when its branch has one of that name."""
        try:
            async with self._sessions() as session, session.begin():
                await session.execute(
                    insert(customer_segments).values(
                        id=segment.id,
                        name=segment.name,
                        filter=json.dumps(
                            dataclasses.asdict(segment.criteria), ensure_ascii=False, default=_datetime_text
                        ),
                        created_by=segment.created_by,
                        branch_id=segment.branch_id,
                        created_at=segment.created_at,
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"the branch already has a segment named {segment.name!r}") from None
        return segment

    @staticmethod
    def _visible_segments(identity: Identity) -> ColumnElement[bool]:
        s = customer_segments.c
        return or_(s.branch_id == identity.branch_id, s.created_by == identity.user_id)

    @staticmethod
    def _to_segment(row: Row[Any]) -> Segment:
        criteria = json.loads(row.filter)
        for name in ("tiers", "tags", "risk_appetites"):
            criteria[name] = tuple(criteria.get(name, ()))
        if criteria.get("last_contact_before"):
            criteria["last_contact_before"] = dt.datetime.fromisoformat(criteria["last_contact_before"])
        return Segment(
            id=row.id,
            name=row.name,
            criteria=SegmentCriteria(**criteria),
            created_by=row.created_by,
            branch_id=row.branch_id,
            created_at=as_utc(row.created_at),
        )

    async def get_segment(self, identity: Identity, segment_id: str) -> Segment:
        """A segment of the caller's branch (or their own); :class:`NotFound` otherwise."""
        s = customer_segments.c
        query = select(customer_segments).where(s.id == segment_id, self._visible_segments(identity))
        async with self._sessions() as session:
            row = (await session.execute(query)).first()
        if row is None:
            raise NotFound(f"segment {segment_id} not found")
        return self._to_segment(row)

    async def list_segments(self, identity: Identity, limit: int, cursor: str) -> tuple[list[Segment], str]:
        """The segments of the caller's branch, oldest first."""
        s = customer_segments.c
        query = select(customer_segments).where(self._visible_segments(identity))
        if cursor:
            query = query.where(s.id > cursor)
        async with self._sessions() as session:
            rows = (await session.execute(query.order_by(s.id).limit(limit + 1))).all()
        segments = [self._to_segment(r) for r in rows[:limit]]
        return segments, (segments[-1].id if len(rows) > limit else "")


def _datetime_text(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in a segment filter")
