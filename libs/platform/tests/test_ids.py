"""Time-ordered ids: valid UUIDv7 text, unique, and in creation order within a process."""

from __future__ import annotations

import uuid

from crm_platform.ids import new_id, uuid7


def test_new_ids_are_uuid7_text_unique_and_in_creation_order() -> None:
    ids = [new_id() for _ in range(20_000)]  # several per millisecond: the counter orders them
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for text in ids[::1000]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122


def test_uuid7_and_new_id_share_one_clock() -> None:
    first, second, third = uuid7(), new_id(), uuid7()
    assert str(first) < second < str(third)
