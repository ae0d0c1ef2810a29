"""ASGI middleware: request id, tracing span, RED metrics and security headers on every response."""

from __future__ import annotations

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


def observability_middleware(app: ASGIApp) -> ASGIApp:
    """Wrap ``app`` so every HTTP request is identified, traced, measured and hardened."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _valid_request_id(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope["path"]
        is_docs = path.startswith("/schema")
        started = time.perf_counter()
        status_holder: dict[str, Any] = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                extra = [(b"x-request-id", request_id.encode()), *_SECURITY_HEADERS]
                if not is_docs:
                    extra.append(_API_CSP)
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        with _tracer.start_as_current_span(
            f"{scope['method']} {path}",
            context=telemetry.extract(headers),
            kind=trace.SpanKind.SERVER,
            attributes={"http.method": scope["method"], "http.target": path, "crm.request_id": request_id},
        ) as span:
            try:
                await app(scope, receive, send_wrapper)
            finally:
                route = scope.get("path_template") or "unmatched"
                status = status_holder["status"]
                span.set_attribute("http.status_code", status)
                metrics.HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
                metrics.HTTP_LATENCY.labels(scope["method"], route).observe(time.perf_counter() - started)

    return middleware


_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def audit_middleware(app: ASGIApp) -> ASGIApp:
    """Record every state-changing call (and every reveal, which is a POST) in the audit trail.

    The record is written when the response status is known and before the response starts, so a caller
    that saw an answer can rely on its audit record existing. Handlers add facts (a reveal's purpose, a
    login's username) under ``scope["state"]["audit_detail"]``.
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _STATE_CHANGING:
            await app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                await _record(scope, message["status"])
            await send(message)

        await app(scope, receive, send_wrapper)

    return middleware


async def _record(scope: Scope, status: int) -> None:
    from crm_gateway.audit import AuditEntry

    state = scope.get("state", {})
    identity = state.get("identity")
    client = scope.get("client") or ("", 0)
    entry = AuditEntry(
        actor_id=identity.user_id if identity is not None else "anonymous",
        actor_roles=",".join(identity.roles) if identity is not None else "",
        action=scope["method"],
        resource=scope["path"],
        outcome=status,
        request_id=state.get("request_id", ""),
        client_addr=str(client[0]),
        detail=state.get("audit_detail", {}),
    )
    try:
        await scope["app"].state.audit.append(entry)
    except Exception:  # noqa: BLE001 - the change already happened; losing its record must be loud
        _log.critical("audit record could not be written", extra={"request_id": entry.request_id}, exc_info=True)
