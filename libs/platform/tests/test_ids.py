"""Time-ordered ids: valid UUIDv7 text, unique, and in creation order within a process."""

from __future__ import annotations

import itertools
import uuid

from crm_platform import ids as ids_module
from crm_platform.ids import new_id, new_ids, uuid7


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


def test_ids_in_bulk_are_what_single_calls_give() -> None:
    before = new_id()
    bulk = new_ids(10_000)  # more than one millisecond's 4,096 counter values: the next one is borrowed
    after = new_id()
    assert [before, *bulk, after] == sorted([before, *bulk, after])
    assert len(set(bulk)) == len(bulk) and new_ids(0) == []
    for text in bulk[::997]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    # The same fields as new_id's: 48 bits of milliseconds, then the counter, then 62 random bits.
    stamps = [uuid.UUID(text).int >> 80 for text in bulk]
    assert stamps[0] >= uuid.UUID(before).int >> 80 and stamps[-1] <= uuid.UUID(after).int >> 80
    slots = [(stamp, (uuid.UUID(text).int >> 64) & 0xFFF) for stamp, text in zip(stamps, bulk, strict=True)]
    for (ms_a, c_a), (ms_b, c_b) in itertools.pairwise(slots):  # consecutive slots of the one clock
        assert (ms_b, c_b) == ((ms_a, c_a + 1) if c_a < 0xFFF else (ms_a + 1, 0))
    assert ids_module._last_ms >= stamps[-1]
