"""``/api/v1/audit``: the audit trail for auditors."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.params import Parameter

from crm_gateway.schemas.paging import Cursor, Limit, Page
from crm_platform.validation import collect

_Stamp = Annotated[str | None, Parameter(required=False, pattern=r"^\d{4}-\d{2}-\d{2}(T[0-9:.]+Z?)?$")]


class AuditRecordOut(msgspec.Struct):
    """One audit record with its chain hashes."""

    seq: int
    at: str
    actor_id: str
    actor_roles: list[str]
    action: str
    resource: str
    outcome: int
    request_id: str
    client_addr: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


@get("/api/v1/audit", opt={"permission": "audit:read"})
async def list_audit(
    request: Request[Any, Any, Any],
    actor: Annotated[str | None, Parameter(required=False, max_length=64)] = None,
    resource: Annotated[str | None, Parameter(required=False, max_length=500)] = None,
    since: _Stamp = None,
    until: _Stamp = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AuditRecordOut]:
    """Audit records, oldest first, filtered by actor, resource prefix and time range."""
    after = 0
    with collect() as v:
        if cursor:  # the last record's sequence number: anything else is refused, not read as the first page
            after = v.bounded_int("cursor", cursor) or 0
        for name, stamp in (("since", since), ("until", until)):
            if stamp is not None and not _is_instant(stamp):  # the pattern lets 2026-13-45 through
                v.add(name, "must be a date or an RFC 3339 UTC time, e.g. 2026-01-01T00:00:00Z")
    rows = await request.app.state.audit.query(
        actor=actor, resource=resource, since=since, until=until, after_seq=after, limit=limit + 1
    )
    items = [
        AuditRecordOut(
            seq=r["seq"],
            at=r["at"],
            actor_id=r["actor_id"],
            actor_roles=[x for x in r["actor_roles"].split(",") if x],
            action=r["action"],
            resource=r["resource"],
            outcome=r["outcome"],
            request_id=r["request_id"],
            client_addr=r["client_addr"],
            detail=msgspec.json.decode(r["detail"]),
            prev_hash=r["prev_hash"],
            hash=r["hash"],
        )
        for r in rows[:limit]
    ]
    return Page(items=items, next_cursor=str(items[-1].seq) if len(rows) > limit else None)


def _is_instant(text: str) -> bool:
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True
