"""Collect field violations and raise them together, so a caller learns every bad field at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from crm_platform.errors import FieldViolation, InvalidArgument


class Violations:
    """A list of field violations raised as one :class:`InvalidArgument` by :meth:`raise_if_any`."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        """Record that ``field`` is invalid because of ``description``."""
        self.items.append(FieldViolation(field, description))

    def require_text(self, field: str, value: str, *, max_length: int, min_length: int = 1) -> str:
        """Check a trimmed text length; return the trimmed value."""
        trimmed = value.strip()
        if len(trimmed) < min_length:
            self.add(field, "is required" if min_length == 1 else f"must be at least {min_length} characters")
        elif len(trimmed) > max_length:
            self.add(field, f"must be at most {max_length} characters")
        return trimmed

    def raise_if_any(self) -> None:
        """Raise :class:`InvalidArgument` with every recorded violation, if there is one."""
        if self.items:
            raise InvalidArgument(self.items)


@contextmanager
def collect() -> Iterator[Violations]:
    """``with collect() as v: v.add(...)`` raises at the end of the block when anything was added."""
    violations = Violations()
    yield violations
    violations.raise_if_any()
