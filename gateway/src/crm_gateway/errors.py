"""Errors as RFC 9457 problem details: one mapping from domain errors and gRPC statuses to HTTP."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from crm_platform import errors
from crm_platform.clients import CallFailed

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

_GRPC_TO_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
}
_DOMAIN_TO_HTTP: dict[type[errors.DomainError], int] = {
    errors.InvalidArgument: 422,
    errors.NotFound: 404,
    errors.PermissionDenied: 403,
    errors.Unauthenticated: 401,
    errors.Conflict: 409,
    errors.AlreadyExists: 409,
    errors.FailedPrecondition: 409,
    errors.Unavailable: 503,
}
_TITLES = {
    400: "Bad request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    412: "Precondition failed",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Invalid request",
    428: "Precondition required",
    429: "Too many requests",
    500: "Internal error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def problem(
    request: Request[Any, Any, Any],
    status: int,
    detail: str,
    *,
    reason: str = "",
    errors_: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    """A problem-details response."""
    body: dict[str, Any] = {
        "type": f"https://crm.example/problems/{(reason or _TITLES.get(status, 'error')).lower().replace(' ', '-')}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "request_id": request.scope.get("state", {}).get("request_id", ""),
    }
    if reason:
        body["reason"] = reason
    if errors_:
        body["errors"] = errors_
    body.update(extra)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def on_service_failure(request: Request[Any, Any, Any], exc: CallFailed) -> Response[dict[str, Any]]:
    """gRPC status → problem; service internals (messages of 5xx) are never echoed."""
    failure = exc.failure
    status = _GRPC_TO_HTTP.get(failure.code, 502)
    if status >= 500:
        log.warning("service call failed", extra={"service": exc.service, "code": failure.code.name})
        detail = {503: f"the {exc.service} service is unavailable", 504: f"the {exc.service} service timed out"}
        return problem(request, status, detail.get(status, f"the {exc.service} service failed"))
    fields = [{"field": v.field, "message": v.description} for v in failure.violations]
    extra = {"existing_id": failure.metadata["existing_id"]} if "existing_id" in failure.metadata else {}
    return problem(request, status, failure.message, reason=failure.reason, errors_=fields or None, **extra)


def on_domain_error(request: Request[Any, Any, Any], exc: errors.DomainError) -> Response[dict[str, Any]]:
    """A gateway-side domain error (validation, authentication, rate limit) → problem."""
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        return problem(request, 429, exc.message, reason=exc.reason, headers={"Retry-After": str(retry_after)})
    status = next((s for cls, s in _DOMAIN_TO_HTTP.items() if isinstance(exc, cls)), 400)
    fields = [{"field": v.field, "message": v.description} for v in getattr(exc, "violations", [])]
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return problem(request, status, exc.message, reason=exc.reason, errors_=fields or None, headers=headers)


def on_validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """Litestar's body/parameter validation → 422 naming each field."""
    fields = []
    for item in exc.extra or []:
        if isinstance(item, dict):
            key = str(item.get("key") or item.get("source") or "body")
            fields.append({"field": key, "message": str(item.get("message", "is invalid"))})
    detail = exc.detail if isinstance(exc.detail, str) else "request has invalid fields"
    return problem(request, 422, detail, reason="INVALID_ARGUMENT", errors_=fields or None)


def on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Framework HTTP errors (404 route, 405, 413 …) as problems."""
    if isinstance(exc, NotAuthorizedException):
        return problem(request, 401, exc.detail, headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, PermissionDeniedException):
        return problem(request, 403, exc.detail, reason="PERMISSION_DENIED")
    return problem(request, exc.status_code, exc.detail, headers=exc.headers)


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Anything else: logged with its trace, answered without one."""
    log.exception("unhandled error", exc_info=exc)
    return problem(request, HTTP_500_INTERNAL_SERVER_ERROR, "internal error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    CallFailed: on_service_failure,
    errors.DomainError: on_domain_error,
    ValidationException: on_validation_error,
    HTTPException: on_http_exception,
    Exception: on_unexpected,
}
