"""Liveness, readiness (with each dependency's state) and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from crm_gateway.policy import PUBLIC
from crm_platform.db import ping


@get("/healthz", opt={"permission": PUBLIC}, include_in_schema=False)
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@get("/readyz", opt={"permission": PUBLIC}, include_in_schema=False)
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Ready when the identity database, NATS and every service answer; 503 naming what is not."""
    state = request.app.state
    checks: dict[str, bool] = dict(await state.services.health())
    try:
        await ping(state.engine)
        checks["database"] = True
    except Exception:  # noqa: BLE001 - any failure means not ready
        checks["database"] = False
    checks["nats"] = state.bus.connected
    ready = all(checks.values())
    return Response({"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503)


@get("/metrics", opt={"permission": PUBLIC}, include_in_schema=False, media_type=CONTENT_TYPE_LATEST)
async def metrics_endpoint() -> Response[bytes]:
    """Prometheus exposition of this process's metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
