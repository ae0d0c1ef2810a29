"""The gateway in front of a real customer service (real gRPC on loopback, real databases, real NATS)."""

from __future__ import annotations

import jwt
import pytest
from litestar import Litestar, get
from sqlalchemy import update

from crm_gateway.app import ROUTES, check_permissions_declared
from crm_gateway.identity import users
from crm_gateway.policy import Policy
from gateway_harness import PASSWORD, Gateway


async def test_customer_round_trip_through_the_gateway(gateway: Gateway) -> None:
    rm1 = await gateway.bearer("rm1")
    created = await gateway.client.post(
        "/api/v1/customers",
        json={"kind": "individual", "name": "李明"},
        headers={**rm1, "Idempotency-Key": "k-12345678"},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["owner_id"] == "u-rm1" and body["branch_id"] == "BJ001" and body["created_at"].endswith("Z")
    assert created.headers["etag"] == '"1"'
    again = await gateway.client.post(
        "/api/v1/customers",
        json={"kind": "individual", "name": "李明"},
        headers={**rm1, "Idempotency-Key": "k-12345678"},
    )
    assert again.json()["id"] == body["id"]

    got = await gateway.client.get(f"/api/v1/customers/{body['id']}", headers=rm1)
    assert got.status_code == 200 and got.json()["name"] == "李明"
    assert got.headers["x-content-type-options"] == "nosniff" and got.headers["x-request-id"]

    # Out of scope answers 404, exactly like a customer that does not exist (no existence leak).
    for user in ("rm2", "rm4", "head2"):
        other = await gateway.client.get(f"/api/v1/customers/{body['id']}", headers=await gateway.bearer(user))
        assert other.status_code == 404, user
        assert other.headers["content-type"].startswith("application/problem+json")
    head = await gateway.client.get(f"/api/v1/customers/{body['id']}", headers=await gateway.bearer("head"))
    assert head.status_code == 200

    # Admin and auditor hold no customer permission at all: 403.
    for user in ("admin", "auditor"):
        denied = await gateway.client.get(f"/api/v1/customers/{body['id']}", headers=await gateway.bearer(user))
        assert denied.status_code == 403 and denied.json()["reason"] == "PERMISSION_DENIED"


async def test_bad_input_names_the_field(gateway: Gateway) -> None:
    rm1 = await gateway.bearer("rm1")
    reply = await gateway.client.post("/api/v1/customers", json={"kind": "alien", "name": ""}, headers=rm1)
    assert reply.status_code == 422
    problem = reply.json()
    assert problem["status"] == 422 and problem["errors"]
    assert any("kind" in e["field"] or "name" in e["field"] for e in problem["errors"])
    assert "Traceback" not in reply.text


async def test_authentication_failures(gateway: Gateway) -> None:
    assert (await gateway.client.get("/api/v1/customers/x")).status_code == 401
    tokens = await gateway.login("rm1")
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    forged = jwt.encode({**claims, "roles": ["branch_head"]}, "not-the-key-not-the-key-not-the-key!", algorithm="HS256")
    assert (await gateway.client.get("/api/v1/me", headers={"Authorization": f"Bearer {forged}"})).status_code == 401
    expired = jwt.encode({**claims, "exp": 1}, gateway.app.state.settings.jwt_secret, algorithm="HS256")
    reply = await gateway.client.get("/api/v1/me", headers={"Authorization": f"Bearer {expired}"})
    assert reply.status_code == 401 and reply.json()["reason"] == "TOKEN_EXPIRED"

    unknown = await gateway.client.post("/api/v1/auth/login", json={"username": "nobody", "password": "x"})
    wrong = await gateway.client.post("/api/v1/auth/login", json={"username": "rm2", "password": "x"})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json()["detail"] == wrong.json()["detail"]


async def test_lock_out_after_five_failures(gateway: Gateway) -> None:
    for _ in range(5):
        reply = await gateway.client.post("/api/v1/auth/login", json={"username": "rm3", "password": "wrong"})
        assert reply.status_code == 401
    locked = await gateway.client.post("/api/v1/auth/login", json={"username": "rm3", "password": PASSWORD})
    assert locked.status_code == 401 and locked.json()["reason"] == "ACCOUNT_LOCKED"


async def test_refresh_rotation_reuse_detection_and_logout(gateway: Gateway) -> None:
    first = await gateway.login("rm1")
    second = await gateway.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    reuse = await gateway.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401 and reuse.json()["reason"] == "TOKEN_REUSED"
    # Reuse revoked the whole family: the rotated token is dead too.
    dead = await gateway.client.post("/api/v1/auth/refresh", json={"refresh_token": second.json()["refresh_token"]})
    assert dead.status_code == 401

    tokens = await gateway.login("rm2")
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await gateway.client.post("/api/v1/auth/logout", headers=headers)).status_code == 204
    assert (await gateway.client.get("/api/v1/me", headers=headers)).status_code == 401
    refused = await gateway.client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refused.status_code == 401


async def test_forced_password_change_blocks_everything_else(gateway: Gateway) -> None:
    async with gateway.app.state.store.sessions() as session, session.begin():
        await session.execute(update(users).where(users.c.username == "teller1").values(must_change_password=True))
    tokens = await gateway.login("teller1")
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    blocked = await gateway.client.post("/api/v1/customers", json={"kind": "individual", "name": "王"}, headers=headers)
    assert blocked.status_code == 403 and blocked.json()["reason"] == "PASSWORD_CHANGE_REQUIRED"
    assert (await gateway.client.get("/api/v1/me", headers=headers)).json()["must_change_password"] is True
    weak = await gateway.client.post(
        "/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": "short"}, headers=headers
    )
    assert weak.status_code == 422 and {e["field"] for e in weak.json()["errors"]} == {"new_password"}
    changed = await gateway.client.post(
        "/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": "Str0ng&Secure!"}, headers=headers
    )
    assert changed.status_code == 200
    fresh = {"Authorization": f"Bearer {changed.json()['access_token']}"}
    created = await gateway.client.post("/api/v1/customers", json={"kind": "individual", "name": "王"}, headers=fresh)
    assert created.status_code == 201


async def test_health_readiness_metrics_and_schema(gateway: Gateway) -> None:
    assert (await gateway.client.get("/healthz")).json() == {"status": "ok"}
    ready = await gateway.client.get("/readyz")
    # Only the customer service runs here: the gateway is ready, and says which services are down.
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"nats": True, "database": True}
    services = ready.json()["services"]
    assert services["customer"] and not services["reporting"]
    metrics = await gateway.client.get("/metrics")
    assert "crm_http_requests_total" in metrics.text
    schema = await gateway.client.get("/schema/openapi.json")
    assert schema.status_code == 200 and "/api/v1/customers/{customer_id}" in schema.json()["paths"]


def test_app_refuses_a_route_without_permission() -> None:
    @get("/api/v1/undeclared")
    async def undeclared() -> None:
        return None

    app = Litestar(route_handlers=[*ROUTES, undeclared])
    with pytest.raises(RuntimeError, match="declares no permission"):
        check_permissions_declared(app, Policy.load())


async def test_login_flood_from_one_address_is_throttled(gateway: Gateway) -> None:
    statuses = []
    for _ in range(25):
        reply = await gateway.client.post("/api/v1/auth/login", json={"username": "nobody", "password": "x"})
        statuses.append(reply.status_code)
        if reply.status_code == 429:
            assert int(reply.headers["retry-after"]) >= 1
            assert reply.json()["reason"] == "RATE_LIMITED"
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {401}


def test_token_bucket_refills_at_its_rate() -> None:
    from crm_gateway.ratelimit import RateLimited, RateLimiter

    limiter = RateLimiter(rate=2, burst=2)
    limiter.hit("u", now=0.0)
    limiter.hit("u", now=0.0)
    with pytest.raises(RateLimited) as err:
        limiter.hit("u", now=0.1)
    assert err.value.retry_after == 1
    limiter.hit("u", now=0.6)  # 0.5 s at 2/s gave back one token
    limiter.hit("other", now=0.6)  # keys are independent
