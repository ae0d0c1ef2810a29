"""Identity administration, its crm.identity.* events, password history and the TOTP second factor."""

from __future__ import annotations

import asyncio
import itertools

import nats
import pyotp

from crm.common.v1 import envelope_pb2
from crm.identity.v1 import events_pb2
from gateway_harness import PASSWORD, Gateway


async def test_admin_creates_branch_team_and_user_who_must_change_password(gateway: Gateway) -> None:
    admin = await gateway.bearer("admin")
    branch = await gateway.client.post(
        "/api/v1/admin/branches", json={"id": "GZ001", "name": "Guangzhou Tianhe", "region": "south"}, headers=admin
    )
    assert branch.status_code == 201, branch.text
    dup = await gateway.client.post(
        "/api/v1/admin/branches", json={"id": "GZ001", "name": "x", "region": "south"}, headers=admin
    )
    assert dup.status_code == 409
    team = await gateway.client.post(
        "/api/v1/admin/teams", json={"id": "T9", "branch_id": "GZ001", "name": "Wealth 9"}, headers=admin
    )
    assert team.status_code == 201, team.text

    wrong_team = await gateway.client.post(
        "/api/v1/admin/users",
        json={"username": "rm9", "display_name": "RM Nine", "roles": ["rm"], "branch_id": "BJ001", "team_id": "T9"},
        headers=admin,
    )
    assert wrong_team.status_code == 422 and wrong_team.json()["errors"][0]["field"] == "team_id"
    bad_role = await gateway.client.post(
        "/api/v1/admin/users",
        json={"username": "rm9", "display_name": "RM Nine", "roles": ["wizard"], "branch_id": "GZ001"},
        headers=admin,
    )
    assert bad_role.status_code == 422 and bad_role.json()["errors"][0]["field"] == "roles"

    created = await gateway.client.post(
        "/api/v1/admin/users",
        json={"username": "rm9", "display_name": "RM Nine", "roles": ["rm"], "branch_id": "GZ001", "team_id": "T9"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["user"]["region"] == "south" and body["user"]["must_change_password"] is True

    tokens = await gateway.login("rm9", body["temporary_password"])
    forced = await gateway.client.get(
        "/api/v1/customers/any", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert forced.status_code == 403 and forced.json()["reason"] == "PASSWORD_CHANGE_REQUIRED"

    # Roles, disable, and the admin sees no customer data.
    roles = await gateway.client.put(
        f"/api/v1/admin/users/{body['user']['id']}/roles", json={"roles": ["rm", "teller"]}, headers=admin
    )
    assert roles.json()["roles"] == ["rm", "teller"]
    disabled = await gateway.client.post(f"/api/v1/admin/users/{body['user']['id']}/disable", headers=admin)
    assert disabled.json()["status"] == "disabled"
    refused = await gateway.client.post(
        "/api/v1/auth/login", json={"username": "rm9", "password": body["temporary_password"]}
    )
    assert refused.status_code == 401
    assert (await gateway.client.get("/api/v1/customers/x", headers=admin)).status_code == 403
    rm1 = await gateway.bearer("rm1")
    assert (await gateway.client.get("/api/v1/admin/users", headers=rm1)).status_code == 403

    listing = await gateway.client.get("/api/v1/admin/users", params={"branch_id": "GZ001"}, headers=admin)
    assert [u["username"] for u in listing.json()["items"]] == ["rm9"]


async def test_branch_and_team_lists_page_by_code(gateway: Gateway) -> None:
    admin = await gateway.bearer("admin")
    for code in ("PG001", "PG002", "PG003"):
        reply = await gateway.client.post(
            "/api/v1/admin/branches", json={"id": code, "name": code, "region": "east"}, headers=admin
        )
        assert reply.status_code == 201, reply.text
        for team in ("A", "B"):
            reply = await gateway.client.post(
                "/api/v1/admin/teams", json={"id": f"{code}-{team}", "branch_id": code, "name": team}, headers=admin
            )
            assert reply.status_code == 201, reply.text

    async def walk(path: str, **params: str) -> list[str]:
        seen, cursor = [], None
        while True:
            query = {"limit": "2", **params, **({"cursor": cursor} if cursor else {})}
            page = (await gateway.client.get(path, params=query, headers=admin)).json()
            assert len(page["items"]) <= 2
            seen += [item["id"] for item in page["items"]]
            if not (cursor := page["next_cursor"]):
                return seen

    branches = await walk("/api/v1/admin/branches")
    assert branches == sorted(branches) and {"PG001", "PG002", "PG003"} <= set(branches)
    assert len(branches) == len(set(branches))
    assert await walk("/api/v1/admin/teams", branch_id="PG002") == ["PG002-A", "PG002-B"]
    too_big = await gateway.client.get("/api/v1/admin/teams", params={"limit": "501"}, headers=admin)
    assert too_big.status_code == 422 and "limit" in too_big.text


async def test_identity_changes_are_published(gateway: Gateway) -> None:
    admin = await gateway.bearer("admin")
    reply = await gateway.client.post(
        "/api/v1/admin/users",
        json={
            "username": "lead7",
            "display_name": "Lead Seven",
            "roles": ["team_lead"],
            "branch_id": "BJ001",
            "team_id": "T2",
        },
        headers=admin,
    )
    user_id = reply.json()["user"]["id"]
    nc = await nats.connect(gateway.app.state.settings.nats_url)
    try:
        sub = await nc.jetstream().pull_subscribe("crm.identity.user.created", durable=None, stream="CRM_IDENTITY")
        found = None
        for _ in range(50):
            for msg in await sub.fetch(100, timeout=2):
                envelope = envelope_pb2.EventEnvelope.FromString(msg.data)
                if envelope.subject_id == user_id:
                    found = events_pb2.UserChanged()
                    envelope.payload.Unpack(found)
            if found is not None:
                break
            await asyncio.sleep(0.05)
    finally:
        await nc.close()
    assert (
        found is not None and found.team_id == "T2" and found.region == "north" and list(found.roles) == ["team_lead"]
    )


async def test_password_history_and_policy(gateway: Gateway) -> None:
    headers = await gateway.bearer("rm2")
    passwords = [PASSWORD, "First-Passw0rd!", "Second-Passw0rd!"]
    for old, new in itertools.pairwise(passwords):
        reply = await gateway.client.post(
            "/api/v1/auth/password", json={"current_password": old, "new_password": new}, headers=headers
        )
        assert reply.status_code == 200, reply.text
        headers = {"Authorization": f"Bearer {reply.json()['access_token']}"}
    reuse = await gateway.client.post(
        "/api/v1/auth/password", json={"current_password": passwords[-1], "new_password": PASSWORD}, headers=headers
    )
    assert reuse.status_code == 422 and "last 5" in reuse.json()["errors"][0]["message"]
    with_name = await gateway.client.post(
        "/api/v1/auth/password",
        json={"current_password": passwords[-1], "new_password": "Xx-rm2-12345"},
        headers=headers,
    )
    assert with_name.status_code == 422


async def test_totp_enrol_confirm_and_require(gateway: Gateway) -> None:
    headers = await gateway.bearer("lead1")
    enrol = await gateway.client.post("/api/v1/auth/totp/enrol", headers=headers)
    assert enrol.status_code == 200 and enrol.json()["otpauth_uri"].startswith("otpauth://totp/")
    secret = enrol.json()["secret"]
    bad = await gateway.client.post("/api/v1/auth/totp/confirm", json={"otp": "000000"}, headers=headers)
    assert bad.status_code == 422
    ok = await gateway.client.post("/api/v1/auth/totp/confirm", json={"otp": pyotp.TOTP(secret).now()}, headers=headers)
    assert ok.status_code == 204

    missing = await gateway.client.post("/api/v1/auth/login", json={"username": "lead1", "password": PASSWORD})
    assert missing.status_code == 401 and missing.json()["reason"] == "OTP_REQUIRED"
    wrong = await gateway.client.post(
        "/api/v1/auth/login", json={"username": "lead1", "password": PASSWORD, "otp": "123456"}
    )
    assert wrong.status_code == 401
    good = await gateway.client.post(
        "/api/v1/auth/login", json={"username": "lead1", "password": PASSWORD, "otp": pyotp.TOTP(secret).now()}
    )
    assert good.status_code == 200
    # The seed is stored encrypted, never in the clear.
    from sqlalchemy import select

    from crm_gateway.identity import users

    async with gateway.app.state.store.sessions() as session:
        stored = (await session.execute(select(users.c.totp_secret).where(users.c.username == "lead1"))).scalar_one()
    assert secret not in stored
