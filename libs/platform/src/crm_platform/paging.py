"""Page sizes as the contracts define them: default 50, at most 500."""

from __future__ import annotations

from crm.common.v1 import paging_pb2

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_limit(page: paging_pb2.PageRequest) -> int:
    """The effective page size of a request (0 → default; capped at the maximum)."""
    size = page.page_size
    if size <= 0:
        return DEFAULT_PAGE_SIZE
    return min(size, MAX_PAGE_SIZE)
