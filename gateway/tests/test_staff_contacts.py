"""Staff e-mail and mobile: validated, encrypted at rest with a data key per user, masked in every answer, and
published sealed for the notification service."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from crm.identity.v1 import events_pb2
from crm_gateway.identity import staff_contacts
from crm_platform.pii import PiiKeyError, StaffContact, open_staff_contact, staff_contact_key
from gateway_harness import Gateway, outbox_events

EMAIL, MOBILE = "wang.lei@bank.example.cn", "13912345678"


def _database_files(directory: Path) -> dict[str, bytes]:
    """The gateway's SQLite database file and its companions (-wal, -shm), by name."""
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.name.startswith("gateway.db")}


async def _sealed_contacts(gateway: Gateway, user_id: str) -> list[StaffContact]:
    key = staff_contact_key(gateway.app.state.settings.staff_contact_key)
    found = await outbox_events(
        gateway.app.state.engine, "crm.identity.user.contact_changed", events_pb2.StaffContactChanged
    )
    return [open_staff_contact(key, user_id, m.sealed) for _, m in found if m.user_id == user_id]


async def test_contacts_are_validated_and_answered_masked(gateway: Gateway) -> None:
    admin = await gateway.bearer("admin")
    body = {"username": "rm8", "display_name": "RM Eight", "roles": ["rm"], "branch_id": "BJ001", "team_id": "T1"}
    bad = await gateway.client.post(
        "/api/v1/admin/users", json={**body, "email": "wang.lei@", "mobile": "12345678901"}, headers=admin
    )
    assert bad.status_code == 422
    assert sorted(e["field"] for e in bad.json()["errors"]) == ["email", "mobile"]

    created = await gateway.client.post(
        "/api/v1/admin/users", json={**body, "email": EMAIL, "mobile": "+86 139-1234-5678"}, headers=admin
    )
    assert created.status_code == 201, created.text
    user = created.json()["user"]
    assert (user["email"], user["mobile"]) == ("w***@bank.example.cn", "139****5678")
    got = (await gateway.client.get(f"/api/v1/admin/users/{user['id']}", headers=admin)).json()
    assert (got["email"], got["mobile"]) == ("w***@bank.example.cn", "139****5678")
    listed = (await gateway.client.get("/api/v1/admin/users", params={"team_id": "T1"}, headers=admin)).json()
    by_name = {u["username"]: u for u in listed["items"]}
    assert by_name["rm8"]["mobile"] == "139****5678" and by_name["rm1"]["email"] is None

    refused = await gateway.client.patch(f"/api/v1/admin/users/{user['id']}", json={"mobile": "110"}, headers=admin)
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "mobile"
    cleared = await gateway.client.patch(f"/api/v1/admin/users/{user['id']}", json={"mobile": None}, headers=admin)
    assert (cleared.json()["email"], cleared.json()["mobile"]) == ("w***@bank.example.cn", None)
    renamed = await gateway.client.patch(
        f"/api/v1/admin/users/{user['id']}", json={"display_name": "R8"}, headers=admin
    )
    assert renamed.json()["email"] == "w***@bank.example.cn"  # absent: kept, and no new contact event

    # Every change went out sealed, and opens with CRM_STAFF_CONTACT_KEY to exactly what was stored.
    assert await _sealed_contacts(gateway, user["id"]) == [StaffContact(EMAIL, MOBILE), StaffContact(EMAIL, "")]


async def test_contacts_are_encrypted_at_rest(gateway: Gateway, tmp_path: Path) -> None:
    admin = await gateway.bearer("admin")
    reply = await gateway.client.post(
        "/api/v1/admin/users",
        json={"username": "teller9", "display_name": "T9", "roles": ["teller"], "email": EMAIL, "mobile": MOBILE},
        headers=admin,
    )
    assert reply.status_code == 201, reply.text
    user_id = reply.json()["user"]["id"]

    async with gateway.app.state.engine.connect() as conn:
        (row,) = (await conn.execute(select(staff_contacts).where(staff_contacts.c.user_id == user_id))).all()
    assert row.kid == "dev" and row.wrapped_key and row.email_enc and row.mobile_enc
    for stored in (row.wrapped_key, row.email_enc, row.mobile_enc):
        assert EMAIL.encode() not in stored and MOBILE.encode() not in stored
    # Nowhere in the database file either (the outbox holds the sealed form only; the audit log no body).
    files = await asyncio.to_thread(_database_files, tmp_path)
    assert files
    for path, data in files.items():
        assert EMAIL.encode() not in data and MOBILE.encode() not in data, path

    assert await _sealed_contacts(gateway, user_id) == [StaffContact(EMAIL, MOBILE)]
    # Sealed for its user: under another user's id it does not open.
    (_, event), *_ = [
        found
        for found in await outbox_events(
            gateway.app.state.engine, "crm.identity.user.contact_changed", events_pb2.StaffContactChanged
        )
        if found[1].user_id == user_id
    ]
    with pytest.raises(PiiKeyError):
        open_staff_contact(staff_contact_key(gateway.app.state.settings.staff_contact_key), "u-rm1", event.sealed)
