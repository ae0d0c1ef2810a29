"""Optimistic concurrency, the one way every route does it: a resource answers its version as the ``ETag``; a
change names the version it was based on in ``If-Match``. Missing where required → **428**; not a version, or
no longer the current one → **412** (the service answers ``VERSION_CONFLICT`` and :func:`versioned` maps it)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, TypeVar

from litestar.exceptions import HTTPException
from litestar.params import Parameter

from crm_platform.clients import CallFailed
from crm_platform.validation import Violations

T = TypeVar("T")

IfMatch = Annotated[
    str | None,
    Parameter(header="If-Match", required=False, max_length=40, description="The ETag the change is based on."),
]


def required_version(if_match: str | None, what: str) -> int:
    """The version ``If-Match`` names; 428 when it is absent, 412 when it names no version. ``what`` ("the
    customer") goes in the message."""
    version = optional_version(if_match, what)
    if version is None:
        raise HTTPException(status_code=428, detail=f"If-Match with {what}'s ETag is required")
    return version


def optional_version(if_match: str | None, what: str) -> int | None:
    """The version ``If-Match`` names (``"7"``, ``W/"7"`` or ``7``), None when absent; 412 when it names no
    version."""
    if not if_match:
        return None
    # A version is an int64 (as the services store it): a longer number can match no ETag, and would overflow the
    # protobuf field it is sent in.
    version = Violations().bounded_int("If-Match", if_match.strip().removeprefix("W/").strip('"'))
    if version is None:
        raise HTTPException(status_code=412, detail=f"If-Match does not match {what}'s ETag")
    return version


async def versioned(call: Awaitable[T], stale: str) -> T:
    """Await a change guarded by an expected version: a stale one (``VERSION_CONFLICT``) answers 412 with
    ``stale``."""
    try:
        return await call
    except CallFailed as exc:
        if exc.failure.reason == "VERSION_CONFLICT":
            raise HTTPException(status_code=412, detail=stale) from None
        raise
