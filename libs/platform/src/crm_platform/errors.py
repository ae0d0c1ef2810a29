"""Typed domain errors. Domain code raises these; each edge maps them once (gRPC status, then HTTP problem)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field and why, e.g. ``FieldViolation("mobile", "must be 11 digits starting with 1")``."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error a domain rule raises. ``reason`` is a stable machine-readable code."""

    reason = "DOMAIN_ERROR"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(DomainError):
    """The request breaks a validation rule; ``violations`` names each field."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], message: str = "request has invalid fields") -> None:
        super().__init__(message)
        self.violations = list(violations)


class NotFound(DomainError):
    """The entity does not exist or lies outside the caller's data scope (the two are not told apart)."""

    reason = "NOT_FOUND"


class PermissionDenied(DomainError):
    """The caller may see the entity but not perform this action."""

    reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    """The call carries no valid identity."""

    reason = "UNAUTHENTICATED"


class FailedPrecondition(DomainError):
    """The entity's state forbids the action (e.g. closing an unresolved ticket)."""

    reason = "FAILED_PRECONDITION"


class Conflict(DomainError):
    """Optimistic concurrency: the entity changed since the caller read it (gRPC ABORTED)."""

    reason = "VERSION_CONFLICT"


class AlreadyExists(DomainError):
    """A unique fact already belongs to another entity; ``existing_id`` names it when the caller may know."""

    reason = "ALREADY_EXISTS"

    def __init__(self, message: str, *, existing_id: str = "", reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.existing_id = existing_id


class Unavailable(DomainError):
    """A part this call depends on cannot be reached right now; the caller may retry (gRPC UNAVAILABLE)."""

    reason = "UNAVAILABLE"
