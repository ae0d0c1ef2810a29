"""``POST /api/v1/customers/{id}/merge`` through the gateway (real uvicorn, real customer service, SQLite, NATS):
who may merge, scope (404 for a file outside it, survivor or duplicate), fields validated at the door and
named, the merged file's status, versions, refusals, and the audit record."""

from __future__ import annotations

from typing import Any

import pytest

from gateway_harness import Gateway

ID_NUMBER = "110105199001011232"
OTHER_ID = "11010519491231002X"
MOBILE = "13800138000"


@pytest.fixture
def gateway_env() -> dict[str, str]:
    return {"CRM_GATEWAY_LOGIN_RATE_PER_MINUTE": "1000"}


async def _create(gateway: Gateway, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"kind": "individual", "name": "王芳", **fields}
    reply = await gateway.client.post("/api/v1/customers", json=body, headers=headers)
    assert reply.status_code == 201, reply.text
    return reply.json()


async def test_merge_route(gateway: Gateway) -> None:
    h = {u: await gateway.bearer(u) for u in ("rm1", "rm2", "rm3", "lead1", "head", "head2", "auditor")}
    c = gateway.client
    survivor = await _create(gateway, h["rm1"], occupation="doctor")
    duplicate = await _create(
        gateway, h["rm2"], id_type="resident_id", id_number=ID_NUMBER, mobile=MOBILE, gender="female"
    )
    other_team = await _create(gateway, h["rm3"])
    far = await _create(gateway, h["head2"])
    url = f"/api/v1/customers/{survivor['id']}/merge"
    body = {"duplicate_id": duplicate["id"], "reason": "柜面与客户经理重复建档"}

    # Only branch heads and team leads merge; an RM is refused before any lookup.
    assert (await c.post(url, json=body, headers=h["rm1"])).status_code == 403
    # Outside the caller's scope, survivor or duplicate, answers as an unknown id does.
    for who, path, dup in (
        ("head", url, far["id"]),
        ("head", f"/api/v1/customers/{far['id']}/merge", duplicate["id"]),
        ("lead1", url, other_team["id"]),
        ("lead1", f"/api/v1/customers/{other_team['id']}/merge", duplicate["id"]),
        ("head", url, "no-such-customer"),
    ):
        reply = await c.post(path, json={**body, "duplicate_id": dup}, headers=h[who])
        assert reply.status_code == 404, (who, path, reply.text)
        assert "王芳" not in reply.text

    # Validated at the door, every bad field named.
    for bad, field in (
        ({"duplicate_id": duplicate["id"]}, "reason"),
        ({**body, "reason": "   "}, "reason"),
        ({**body, "reason": "x" * 501}, "reason"),
        ({**body, "duplicate_id": "a b"}, "duplicate_id"),
        ({**body, "duplicate_id": survivor["id"]}, "duplicate_id"),
        ({**body, "duplicate_version": 0}, "duplicate_version"),
    ):
        reply = await c.post(url, json=bad, headers=h["head"])
        assert reply.status_code == 422, (bad, reply.text)
        assert [e["field"] for e in reply.json()["errors"]] == [field], reply.json()
    assert (await c.post(url, json={**body, "extra": 1}, headers=h["head"])).status_code == 422

    # Versions: a stale If-Match or duplicate_version is refused as a PATCH's would be.
    stale = await c.post(url, json=body, headers={**h["head"], "If-Match": '"7"'})
    assert stale.status_code == 412
    stale = await c.post(url, json={**body, "duplicate_version": 7}, headers=h["head"])
    assert stale.status_code == 412

    # Not the same person: refused with the reason.
    twin = await _create(gateway, h["rm1"], id_type="resident_id", id_number=OTHER_ID)
    refused = await c.post(
        f"/api/v1/customers/{twin['id']}/merge", json={**body, "reason": "疑似重复"}, headers=h["head"]
    )
    assert refused.status_code == 409 and refused.json()["reason"] == "DIFFERENT_ID_NUMBER"

    # The branch head merges; the team lead could too (same team).
    headers = {**h["head"], "If-Match": f'"{survivor["version"]}"'}
    done = await c.post(url, json={**body, "duplicate_version": duplicate["version"]}, headers=headers)
    assert done.status_code == 200, done.text
    merged = done.json()
    assert merged["id"] == survivor["id"] and merged["status"] == "active" and merged["owner_id"] == "u-rm1"
    assert (merged["mobile"], merged["id_number"]) == ("138****8000", "110105********1232")
    assert merged["occupation"] == "doctor"
    assert merged["filled_fields"] == ["gender", "birth_date", "id_type", "id_number", "mobile"]
    assert done.headers["etag"] == f'"{merged["version"]}"'

    gone = (await c.get(f"/api/v1/customers/{duplicate['id']}", headers=h["rm2"])).json()
    assert gone["status"] == "merged" and gone["merged_into"] == survivor["id"] and gone["merged_at"]
    again = await c.post(url, json=body, headers=h["head"])
    assert again.status_code == 409 and again.json()["reason"] == "ALREADY_MERGED"
    listed = (await c.get("/api/v1/customers", params={"name": "王芳"}, headers=h["head"])).json()["items"]
    assert duplicate["id"] not in {i["id"] for i in listed} and survivor["id"] in {i["id"] for i in listed}
    again_body = {"kind": "individual", "name": "王芳", "mobile": MOBILE}
    clash = await c.post("/api/v1/customers", json=again_body, headers=h["rm1"])
    assert clash.status_code == 409 and clash.json()["existing_id"] == survivor["id"]
    history = (await c.get(f"/api/v1/customers/{duplicate['id']}/history", headers=h["head"])).json()["items"]
    assert history[0]["action"] == "merged" and history[0]["note"] == body["reason"]

    audit = await c.get("/api/v1/audit", params={"resource": url}, headers=h["auditor"])
    records = [r for r in audit.json()["items"] if r["outcome"] == 200]
    assert len(records) == 1 and records[0]["actor_id"] == "u-head"
    assert records[0]["detail"] == {"duplicate_id": duplicate["id"], "reason": body["reason"]}


async def test_merge_route_is_in_the_openapi_document(gateway: Gateway) -> None:
    paths = (await gateway.client.get("/schema/openapi.json")).json()["paths"]
    operation = paths["/api/v1/customers/{customer_id}/merge"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert "MergeIn" in str(body) and "200" in operation["responses"]
