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
    """Ready when the gateway's own dependencies answer (identity database, NATS); 503 naming what is not.

    The services' health is reported beside them but does not gate readiness: one service being down must
    make its routes answer 503, not take every gateway replica out of the load balancer.
    """
    state = request.app.state
    checks: dict[str, bool] = {"nats": state.bus.connected}
    try:
        await ping(state.engine)
        checks["database"] = True
    except Exception:  # noqa: BLE001 - any failure means not ready
        checks["database"] = False
    ready = all(checks.values())
    body = {"status": "ready" if ready else "not_ready", "checks": checks, "services": await state.clients.health()}
    return Response(body, status_code=200 if ready else 503)


@get("/metrics", opt={"permission": PUBLIC}, include_in_schema=False, media_type=CONTENT_TYPE_LATEST)
async def metrics_endpoint() -> Response[bytes]:
    """Prometheus exposition of this process's metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
