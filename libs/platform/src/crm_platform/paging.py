"""Page sizes as the contracts define them (default 50, at most 500), and the check of id-keyed page tokens."""

from __future__ import annotations

import re

from crm.common.v1 import paging_pb2
from crm_platform.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_limit(page: paging_pb2.PageRequest) -> int:
    """The effective page size of a request (0 → default; capped at the maximum)."""
    size = page.page_size
    if size <= 0:
        return DEFAULT_PAGE_SIZE
    return min(size, MAX_PAGE_SIZE)


# The canonical text of an id from crm_platform.ids.new_id (a time-ordered UUID): lists keyed by id use the last
# id of a page as the next page's token.
_ID_TOKEN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def after_id(page: paging_pb2.PageRequest) -> str:
    """The id a keyset page continues after ('' for the first page). A token that is no id this list could have
    returned is refused (``INVALID_ARGUMENT`` naming ``page.page_token``) rather than answered as an empty page:
    a caller with a garbled cursor learns it, and no garbage reaches a query."""
    token = page.page_token
    if token and not _ID_TOKEN.match(token):
        raise InvalidArgument([FieldViolation("page.page_token", "is not a token this list returned")])
    return token
