"""The list shape every front end relies on: ``{"items": [...], "next_cursor": "..." | null}``."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

import msgspec
from litestar.params import Parameter

T = TypeVar("T")

Limit = Annotated[int, Parameter(ge=1, le=500, description="Page size (default 50, at most 500).")]
Cursor = Annotated[
    str | None, Parameter(required=False, max_length=200, description="next_cursor of the previous page.")
]


class Page(msgspec.Struct, Generic[T]):
    """One page of a list."""

    items: list[T]
    next_cursor: str | None
