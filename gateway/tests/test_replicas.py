"""Several gateway replicas: a logout on one is refused on the others (shared revocation), on a real PostgreSQL
identity store and a real NATS; and the client address behind trusted proxies."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from crm_gateway.app import create_app
from crm_gateway.auth import Authenticator
from crm_gateway.config import Settings
from crm_gateway.policy import Policy
from crm_gateway.ratelimit import ClientAddress
from crm_gateway.revocations import Revocations
from crm_platform.config import SettingsError, load
from crm_platform.errors import Unauthenticated
from crm_testing.nats_server import NatsServer, free_port
from crm_testing.services import TEST_SECRET
from gateway_harness import Gateway, served

pytestmark = pytest.mark.postgres


@contextlib.asynccontextmanager
async def replica(database_url: str, nats_url: str, data_dir: Path, **extra: str) -> AsyncIterator[Gateway]:
    """One gateway process's worth: the app under a real uvicorn in this loop, sharing database and NATS."""
    unused = f"127.0.0.1:{free_port()}"
    settings = load(
        Settings,
        {
            "CRM_DATA_DIR": str(data_dir),
            "CRM_NATS_URL": nats_url,
            "CRM_INTERNAL_SECRET": TEST_SECRET,
            "GATEWAY_DATABASE_URL": database_url,
            "CRM_DEMO": "1",
            **{
                f"CRM_{s}_ADDR": unused
                for s in ("CUSTOMER", "INTERACTION", "OPPORTUNITY", "TICKET", "NOTIFICATION", "REPORTING")
            },
            **extra,
        },
    )
    app = create_app(settings)
    async with served(app) as gateway:  # the production HTTP protocol, in this event loop
        yield gateway


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "not within the time limit"
        await asyncio.sleep(0.05)


async def test_logout_on_one_replica_is_refused_on_every_replica(
    postgres_url: str, private_nats: NatsServer, tmp_path: Path
) -> None:
    async with (
        replica(postgres_url, private_nats.url, tmp_path / "a") as a,
        replica(postgres_url, private_nats.url, tmp_path / "b") as b,
    ):
        tokens = await a.login("rm1")
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert (await b.client.get("/api/v1/me", headers=headers)).status_code == 200  # B has verified it

        assert (await a.client.post("/api/v1/auth/logout", headers=headers)).status_code == 204
        assert (await a.client.get("/api/v1/me", headers=headers)).status_code == 401  # at once where it happened

        async def refused_on_b() -> bool:
            reply = await b.client.get("/api/v1/me", headers=headers)
            return reply.status_code == 401 and reply.json()["reason"] == "SESSION_REVOKED"

        await eventually(refused_on_b)  # through crm.identity.session.revoked, not a database hit per request

        # A replica started after the logout knows it from the database.
        async with replica(postgres_url, private_nats.url, tmp_path / "c") as c:
            late = await c.client.get("/api/v1/me", headers=headers)
            assert late.status_code == 401 and late.json()["reason"] == "SESSION_REVOKED"

        # Another session of the same user is unaffected.
        other = {"Authorization": f"Bearer {(await b.login('rm1'))['access_token']}"}
        assert (await a.client.get("/api/v1/me", headers=other)).status_code == 200


async def test_refresh_token_reuse_revokes_the_session_on_every_replica(
    postgres_url: str, private_nats: NatsServer, tmp_path: Path
) -> None:
    async with (
        replica(postgres_url, private_nats.url, tmp_path / "a") as a,
        replica(postgres_url, private_nats.url, tmp_path / "b") as b,
    ):
        first = await a.login("rm2")
        headers = {"Authorization": f"Bearer {first['access_token']}"}
        assert (await b.client.get("/api/v1/me", headers=headers)).status_code == 200
        rotated = await a.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert rotated.status_code == 200
        reuse = await a.client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert reuse.json()["reason"] == "TOKEN_REUSED"

        async def refused_on_b() -> bool:
            return (await b.client.get("/api/v1/me", headers=headers)).status_code == 401

        await eventually(refused_on_b)


async def test_a_replica_missing_the_event_catches_up_from_the_database(
    postgres_url: str, private_nats: NatsServer, tmp_path: Path
) -> None:
    async with (
        replica(postgres_url, private_nats.url, tmp_path / "a") as a,
        replica(postgres_url, private_nats.url, tmp_path / "b") as b,
    ):
        tokens = await a.login("rm3")
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        # Simulate a lost message: B's set is cleared after the event, then its periodic re-sync runs.
        assert (await a.client.post("/api/v1/auth/logout", headers=headers)).status_code == 204
        authenticator: Authenticator = b.app.state.authenticator
        await eventually(lambda: _is_in(authenticator.revocations, tokens))
        authenticator.revocations._until.clear()
        assert (await b.client.get("/api/v1/me", headers=headers)).status_code == 200
        store = b.app.state.store
        authenticator.revocations.update(await store.revoked_sessions_since(time.time() - 60))
        assert (await b.client.get("/api/v1/me", headers=headers)).status_code == 401


async def _is_in(revocations: Revocations, tokens: dict[str, Any]) -> bool:
    import jwt

    return jwt.decode(tokens["access_token"], options={"verify_signature": False})["sid"] in revocations


def test_verified_tokens_are_still_checked_for_expiry_and_revocation() -> None:
    import jwt

    secret = "s" * 40
    authenticator = Authenticator(None, Policy.load(), secret, 15, 12)  # type: ignore[arg-type]
    now = int(time.time())
    claims = {"iss": "crm-gateway", "sub": "u1", "roles": ["rm"], "sid": "s1", "iat": now, "exp": now + 2}
    token = jwt.encode(claims, secret, algorithm="HS256")
    first, _ = authenticator.verify(token, "r1")
    second, _ = authenticator.verify(token, "r2")  # from the cache: same caller, this request's id
    assert first.user_id == second.user_id == "u1" and second.request_id == "r2" and second.permissions
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(Unauthenticated):
        authenticator.verify(tampered, "r3")
    authenticator.revocations.add("s1")
    with pytest.raises(Unauthenticated, match="revoked"):
        authenticator.verify(token, "r4")
    other = jwt.encode({**claims, "sid": "s2", "exp": now + 1}, secret, algorithm="HS256")
    authenticator.verify(other, "r5")
    time.sleep(1.1)
    with pytest.raises(Unauthenticated, match="expired"):
        authenticator.verify(other, "r6")


def test_revocations_are_forgotten_after_an_access_token_lifetime() -> None:
    revocations = Revocations(access_ttl_seconds=60)
    revocations.add("old", revoked_at=time.time() - 61)  # every token of it has expired already
    revocations.add("new")
    assert "old" not in revocations and "new" in revocations


def test_client_address_honours_forwarded_for_only_from_trusted_proxies() -> None:
    def scope(peer: str, *forwarded: str) -> dict[str, Any]:
        return {"client": (peer, 1234), "headers": [(b"x-forwarded-for", f.encode()) for f in forwarded]}

    untrusting = ClientAddress()
    assert untrusting(scope("10.0.0.5", "1.2.3.4")) == "10.0.0.5"  # default: the header proves nothing

    behind = ClientAddress(["10.0.0.0/24", "192.168.1.1"])
    assert behind(scope("10.0.0.5", "1.2.3.4")) == "1.2.3.4"
    # The client's own entries (left) are ignored; the right-most untrusted hop is the client.
    assert behind(scope("10.0.0.5", "6.6.6.6, 1.2.3.4, 192.168.1.1")) == "1.2.3.4"
    assert behind(scope("10.0.0.5", "6.6.6.6", "1.2.3.4")) == "1.2.3.4"  # several header lines
    assert behind(scope("172.16.0.9", "1.2.3.4")) == "172.16.0.9"  # not from a trusted proxy
    assert behind(scope("10.0.0.5")) == "10.0.0.5"  # no header
    assert behind(scope("10.0.0.5", "10.0.0.7")) == "10.0.0.7"  # only proxies: the left-most one


def test_trusted_proxies_setting_is_checked_at_start() -> None:
    assert load(Settings, {"CRM_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1"}).trusted_proxies == (
        "10.0.0.0/8",
        "127.0.0.1",
    )
    with pytest.raises(SettingsError, match="CRM_TRUSTED_PROXIES"):
        load(Settings, {"CRM_TRUSTED_PROXIES": "not-an-address"})
