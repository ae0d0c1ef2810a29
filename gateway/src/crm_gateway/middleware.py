"""ASGI middleware: request id, tracing span, RED metrics and security headers on every response."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import trace

from crm_platform import metrics, telemetry

_tracer = trace.get_tracer(__name__)
_log = logging.getLogger(__name__)

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
]
_API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")


def _valid_request_id(raw: str) -> bool:
    return 0 < len(raw) <= 64 and all(c.isalnum() or c in "-_." for c in raw)


def _request_headers(raw: list[tuple[bytes, bytes]]) -> tuple[str, dict[str, str]]:
    """The incoming request id and trace context headers, found in one pass over the raw headers (decoding
    every header into a dict on every request was measurable on the hot path)."""
    request_id = ""
    carrier: dict[str, str] = {}
    for key, value in raw:
        if key == b"x-request-id":
            request_id = value.decode("latin-1")
        elif key == b"traceparent" or key == b"tracestate":
            carrier[key.decode("latin-1")] = value.decode("latin-1")
    return request_id, carrier


class _RouteMetrics:
    """Prometheus children per (method, route, status): ``labels()`` takes a lock and builds a key per call."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._latencies: dict[tuple[str, str], Any] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = self._counters[(method, route, status)] = metrics.HTTP_REQUESTS.labels(method, route, str(status))
        counter.inc()
        latency = self._latencies.get((method, route))
        if latency is None:
            latency = self._latencies[(method, route)] = metrics.HTTP_LATENCY.labels(method, route)
        latency.observe(seconds)


def observability_middleware(app: ASGIApp) -> ASGIApp:
    """Wrap ``app`` so every HTTP request is identified, traced, measured and hardened."""
    route_metrics = _RouteMetrics()

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        incoming, carrier = _request_headers(scope["headers"])
        request_id = incoming if _valid_request_id(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope["path"]
        method: str = scope["method"]
        extra = [(b"x-request-id", request_id.encode()), *_SECURITY_HEADERS]
        if not path.startswith("/schema"):
            extra.append(_API_CSP)
        started = time.perf_counter()
        status_holder = [500]
        hung_up = [False]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                hung_up[0] = True
            return message

        attributes = {"http.method": method, "http.target": path, "crm.request_id": request_id}
        with telemetry.request_span(_tracer, f"{method} {path}", carrier, trace.SpanKind.SERVER, attributes) as span:
            try:
                await app(scope, receive_wrapper, send_wrapper)
            finally:
                status = status_holder[0]
                if hung_up[0] and status >= 500:
                    # The client left before its body arrived (a hang-up, or a Content-Length larger than the body
                    # it sent): no fault of ours, and nobody read the answer. Counted as nginx's 499.
                    status = CLIENT_CLOSED_REQUEST
                if span.is_recording():
                    span.set_attribute("http.status_code", status)
                route = scope.get("path_template") or "unmatched"
                seconds = time.perf_counter() - started
                route_metrics.observe(method, route, status, seconds)
                if status >= 500 or seconds >= SLOW_REQUEST_SECONDS:
                    _log_request(scope, method, route, status, seconds)

    return middleware


# The status a request is counted with when its client hung up before the answer (nginx's "client closed request").
CLIENT_CLOSED_REQUEST = 499

# A request this slow is logged (as every answer with a 5xx status is), inside its span so the line carries the
# trace id; the rest are counted in the metrics only: a line per request would cost more than the request.
SLOW_REQUEST_SECONDS = 1.0


def _log_request(scope: Scope, method: str, route: str, status: int, seconds: float) -> None:
    state = scope.get("state", {})
    identity = state.get("identity")
    fields = {
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 1),
        "request_id": state.get("request_id", ""),
        "user": identity.user_id if identity is not None else "",
    }
    if status >= 500:
        _log.error("request failed", extra=fields)
    else:
        _log.warning("slow request", extra=fields)


_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def audit_middleware(app: ASGIApp) -> ASGIApp:
    """Record every state-changing call (and every reveal, which is a POST) in the audit trail, refused ones
    included.

    The record is written when the response status is known and before the response starts, so a caller
    that saw an answer can rely on its audit record existing. When the record cannot be written, the caller
    is answered 503 (``AUDIT_UNAVAILABLE``) instead of the handler's answer: a change nobody can account for
    must not look like a success (the change may have been made: the problem says so). Handlers add facts (a
    reveal's purpose, a login's username) under ``scope["state"]["audit_detail"]``.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _STATE_CHANGING:
            await app(scope, receive, send)
            return
        replaced = False

        async def send_wrapper(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the rest of the handler's answer, which the caller must not see
            if message["type"] == "http.response.start" and not await _record(scope, message["status"]):
                replaced = True
                await _answer_unrecorded(scope, send)
                return
            await send(message)

        await app(scope, receive, send_wrapper)

    return middleware


async def _record(scope: Scope, status: int) -> bool:
    """Write the request's audit record; False (logged, counted) when it could not be written."""
    from crm_gateway.audit import AuditEntry

    state = scope.get("state", {})
    identity = state.get("identity")
    limits = getattr(scope["app"].state, "limits", None)
    client_addr = limits.client_address(scope) if limits is not None else str((scope.get("client") or ("", 0))[0])
    entry = AuditEntry(
        actor_id=identity.user_id if identity is not None else "anonymous",
        actor_roles=",".join(identity.roles) if identity is not None else "",
        action=scope["method"],
        resource=scope["path"],
        outcome=status,
        request_id=state.get("request_id", ""),
        client_addr=client_addr,
        detail=state.get("audit_detail", {}),
    )
    try:
        await scope["app"].state.audit.append(entry)
    except Exception as exc:  # noqa: BLE001 - answered 503 by the caller; the metric alerts
        _log.critical(
            "audit record could not be written",
            extra={"request_id": entry.request_id, "status": status, "error": type(exc).__name__},
        )
        return False
    return True


async def _answer_unrecorded(scope: Scope, send: Send) -> None:
    request_id = scope.get("state", {}).get("request_id", "")
    body = json.dumps(
        {
            "type": "https://crm.example/problems/audit_unavailable",
            "title": "Service unavailable",
            "status": 503,
            "detail": "the audit record of this request could not be written; the change may have been made, "
            "read the resource before trying again",
            "reason": "AUDIT_UNAVAILABLE",
            "instance": scope["path"],
            "request_id": request_id,
        }
    ).encode()
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
