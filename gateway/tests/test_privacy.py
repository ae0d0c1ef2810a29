"""Reveal and erasure through the gateway: permission, scope, audit with purpose, never the values."""

from __future__ import annotations

from gateway_harness import Gateway

FILE = {
    "kind": "individual",
    "name": "李明",
    "id_type": "resident_id",
    "id_number": "110105199001011232",
    "mobile": "13800138000",
    "gender": "male",
    "birth_date": "1990-01-01",
}


async def test_reveal_needs_permission_and_scope_and_is_audited_with_its_purpose(gateway: Gateway) -> None:
    c = gateway.client
    rm1 = await gateway.bearer("rm1")
    created = await c.post("/api/v1/customers", json=FILE, headers=rm1)
    assert created.status_code == 201, created.text
    customer = created.json()["id"]
    assert created.json()["mobile"] == "138****8000"  # masked by default

    body = {"fields": ["mobile", "id_number"], "purpose": "confirm identity before a large transfer"}
    shown = await c.post(f"/api/v1/customers/{customer}/reveal", json=body, headers=rm1)
    assert shown.status_code == 200, shown.text
    assert shown.json()["values"] == {"mobile": "13800138000", "id_number": "110105199001011232"}

    # Out of scope: 404 like a customer that does not exist; no pii:reveal (executive): 403.
    assert (
        await c.post(f"/api/v1/customers/{customer}/reveal", json=body, headers=await gateway.bearer("rm2"))
    ).status_code == 404
    assert (
        await c.post(f"/api/v1/customers/{customer}/reveal", json=body, headers=await gateway.bearer("exec"))
    ).status_code == 403
    no_purpose = await c.post(
        f"/api/v1/customers/{customer}/reveal", json={"fields": ["mobile"], "purpose": ""}, headers=rm1
    )
    assert no_purpose.status_code == 422

    auditor = await gateway.bearer("auditor")
    trail = await c.get("/api/v1/audit", params={"resource": f"/api/v1/customers/{customer}/reveal"}, headers=auditor)
    ok = [r for r in trail.json()["items"] if r["outcome"] == 200]
    assert len(ok) == 1 and ok[0]["actor_id"] == "u-rm1"
    assert ok[0]["detail"] == {"fields": ["id_number", "mobile"], "purpose": "confirm identity before a large transfer"}
    assert "13800138000" not in trail.text  # the audit trail records the reveal, never the values


async def test_erasure_by_the_branch_head_shreds_personal_data(gateway: Gateway) -> None:
    c = gateway.client
    rm1 = await gateway.bearer("rm1")
    customer = (await c.post("/api/v1/customers", json=FILE, headers=rm1)).json()["id"]
    reason = {"reason": "PIPL art. 47 request received at the counter, ticket 2026-118"}
    assert (await c.post(f"/api/v1/customers/{customer}/erase", json=reason, headers=rm1)).status_code == 403
    erased = await c.post(f"/api/v1/customers/{customer}/erase", json=reason, headers=await gateway.bearer("head"))
    assert erased.status_code == 200, erased.text
    shown = await c.post(
        f"/api/v1/customers/{customer}/reveal", json={"fields": ["mobile"], "purpose": "after erasure"}, headers=rm1
    )
    assert shown.status_code == 200 and shown.json()["values"] == {}
