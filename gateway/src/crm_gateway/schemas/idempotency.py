"""``Idempotency-Key`` on creating POSTs, the one way every route takes it.

The key is the client's; the gateway scopes it to the caller (:func:`request_id`), so two users cannot collide
on, or probe, each other's keys. The service keeps the resulting request id beside a fingerprint of the request
(:mod:`crm_platform.idempotency`): a retry with the same key and the same body answers the first call's record,
the same key with another body answers **422** with ``reason: IDEMPOTENCY_KEY_REUSED``, as Stripe's keys do.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from litestar.params import Parameter

from crm_platform.auth_context import Identity

IdempotencyKey = Annotated[
    str | None,
    Parameter(
        header="Idempotency-Key",
        required=False,
        min_length=8,
        max_length=64,
        description=(
            "A key of the client's choosing (e.g. a UUID) that makes the create safe to retry: the same key with "
            "the same body answers the first call's record; with another body, 422 IDEMPOTENCY_KEY_REUSED."
        ),
    ),
]


def request_id(identity: Identity, idempotency_key: str | None) -> str:
    """The request id the services store for ``idempotency_key``: SHA-256 (hex) of ``user id:key``, "" without a
    key (every call then creates)."""
    if not idempotency_key:
        return ""
    return hashlib.sha256(f"{identity.user_id}:{idempotency_key}".encode()).hexdigest()
