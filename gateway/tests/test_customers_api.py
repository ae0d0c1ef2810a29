"""The customer API through the gateway (real uvicorn, real customer service over gRPC, real SQLite and NATS):
the smallest create, validation at the door, masking, duplicates (409), ETag/If-Match, lists and search in
scope, history, assignment and reclaim."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway_harness import Gateway

SMALLEST = {
    "kind": "individual",
    "name": "李明",
    "id_type": "resident_id",
    "id_number": "110105199001011232",
    "mobile": "13800138000",
    "gender": "male",
    "birth_date": "1990-01-01",
}


@pytest.fixture
def gateway_env() -> dict[str, str]:
    return {"CRM_GATEWAY_LOGIN_RATE_PER_MINUTE": "1000"}


async def _users(gateway: Gateway, *names: str) -> dict[str, dict[str, str]]:
    return {name: await gateway.bearer(name) for name in names}


async def test_create_validate_mask_duplicates_and_update(gateway: Gateway) -> None:
    h = await _users(gateway, "rm1", "rm2", "head")
    c = gateway.client

    created = await c.post("/api/v1/customers", json=SMALLEST, headers=h["rm1"])
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["owner_id"] == "u-rm1" and body["branch_id"] == "BJ001" and body["id"]
    assert body["id_number"] == "110105********1232" and body["mobile"] == "138****8000"
    assert body["gender"] == "male" and body["birth_date"] == "1990-01-01" and body["tier"] == "none"
    assert "13800138000" not in created.text and "110105199001011232" not in created.text
    assert created.headers["etag"] == '"1"' and created.headers["location"] == f"/api/v1/customers/{body['id']}"

    # Refused at the door, every bad field named (the same rules as the service).
    bad = await c.post(
        "/api/v1/customers",
        json={
            **SMALLEST,
            "id_number": "110105199001011231",
            "mobile": "12345",
            "email": "x@",
            "birth_date": "1990-01-01",
        },
        headers=h["rm1"],
    )
    assert bad.status_code == 422 and {e["field"] for e in bad.json()["errors"]} == {"id_number", "mobile", "email"}
    mismatch = await c.post("/api/v1/customers", json={**SMALLEST, "birth_date": "1991-01-01"}, headers=h["rm1"])
    assert mismatch.status_code == 422 and [e["field"] for e in mismatch.json()["errors"]] == ["id_number"]
    corporate = await c.post("/api/v1/customers", json={"kind": "corporate", "name": "某公司"}, headers=h["rm1"])
    assert corporate.status_code == 422 and corporate.json()["errors"][0]["field"] == "credit_code"
    company = await c.post(
        "/api/v1/customers",
        json={"kind": "corporate", "name": "某公司", "credit_code": "91350100M000100Y43", "industry": "制造"},
        headers=h["rm1"],
    )
    assert company.status_code == 201 and company.json()["credit_code"] == "91350100M000100Y43"

    # Duplicates: 409 naming the existing customer in scope; without the id out of scope.
    dup = await c.post("/api/v1/customers", json={**SMALLEST, "mobile": "13900139000"}, headers=h["rm1"])
    assert dup.status_code == 409 and dup.json()["existing_id"] == body["id"]
    hidden = await c.post("/api/v1/customers", json={**SMALLEST, "mobile": "13900139000"}, headers=h["rm2"])
    assert hidden.status_code == 409 and "existing_id" not in hidden.json()

    # PATCH needs If-Match: 428 without, 412 when stale; the answer carries the new ETag.
    url = f"/api/v1/customers/{body['id']}"
    change = {"mobile": "13700137000", "tier": "gold", "note": "客户来电更新"}
    assert (await c.patch(url, json=change, headers=h["rm1"])).status_code == 428
    assert (await c.patch(url, json=change, headers={**h["rm1"], "If-Match": '"7"'})).status_code == 412
    updated = await c.patch(url, json=change, headers={**h["rm1"], "If-Match": created.headers["etag"]})
    assert updated.status_code == 200, updated.text
    assert updated.json()["mobile"] == "137****7000" and updated.json()["tier"] == "gold"
    assert updated.headers["etag"] == '"2"'
    assert (await c.patch(url, json=change, headers={**h["rm1"], "If-Match": '"1"'})).status_code == 412
    invalid = await c.patch(url, json={"mobile": "999"}, headers={**h["rm1"], "If-Match": '"2"'})
    assert invalid.status_code == 422 and invalid.json()["errors"][0]["field"] == "mobile"
    cleared = await c.patch(url, json={"tier": None}, headers={**h["rm1"], "If-Match": '"2"'})
    assert cleared.status_code == 200 and cleared.json()["tier"] == "none"
    assert (await c.patch(url, json={"tier": "gold"}, headers={**h["rm2"], "If-Match": '"3"'})).status_code == 404

    history = await c.get(f"{url}/history", headers=h["rm1"])
    assert history.status_code == 200
    entries = history.json()["items"]
    assert [e["action"] for e in entries] == ["updated", "updated", "created"]
    assert entries[1]["note"] == "客户来电更新" and entries[1]["actor"] == "u-rm1"
    assert {"field": "mobile", "before": "138****8000", "after": "137****7000"} in entries[1]["changes"]
    assert "13700137000" not in history.text and "13800138000" not in history.text
    assert (await c.get(f"{url}/history", headers=h["rm2"])).status_code == 404


async def test_lists_search_scope_and_ownership(gateway: Gateway) -> None:
    h = await _users(gateway, "rm1", "rm2", "rm3", "lead1", "head", "head2", "exec", "lobby")
    c = gateway.client

    async def create(who: str, **fields: Any) -> dict[str, Any]:
        reply = await c.post("/api/v1/customers", json={"kind": "individual", **fields}, headers=h[who])
        assert reply.status_code == 201, reply.text
        return reply.json()

    mine = await create("rm1", **SMALLEST)
    theirs = await create("rm2", name="王芳", id_type="passport", id_number="E12345678", mobile="13900139000")
    for i in range(3):
        await create("rm1", name=f"客户{i}", tier="diamond" if i == 0 else "gold")
    pooled = await create("lobby", name="张三")
    assert pooled["owner_id"] is None

    async def ids(who: str, **params: Any) -> list[str]:
        reply = await c.get("/api/v1/customers", params=params, headers=h[who])
        assert reply.status_code == 200, reply.text
        return [item["id"] for item in reply.json()["items"]]

    # An RM never finds another RM's customer: not by ID number, mobile, name, number, owner or tier.
    for params in (
        {"id_number": "E12345678"},
        {"mobile": "13900139000"},
        {"name": "王芳"},
        {"customer_no": theirs["customer_no"]},
        {"owner_id": "u-rm2"},
        {"branch_id": "BJ001", "tier": "none"},
        {},
    ):
        assert theirs["id"] not in await ids("rm1", **params), params
    assert await ids("rm1", id_number="110105199001011232") == [mine["id"]]
    assert await ids("rm2", id_number="110105199001011232") == []
    assert (await c.get(f"/api/v1/customers/{theirs['id']}", headers=h["rm1"])).status_code == 404
    assert await ids("head", id_number="e12345678") == [theirs["id"]]
    assert await ids("head2") == [] and await ids("rm3") == []
    assert set(await ids("lead1")) == set(await ids("rm1")) | {theirs["id"]}
    assert pooled["id"] in await ids("head", unassigned="true") and pooled["id"] not in await ids("lead1")
    assert len(await ids("exec", tier=["gold", "diamond"])) == 3
    # An age band: born 1990-01-01, so between 30 and 40 until 2030 (the others have no birth date).
    assert await ids("rm1", age_min=30, age_max=40) == [mine["id"]]
    assert await ids("rm1", age_max=25) == [] and await ids("rm1", age_min=50) == []
    assert (await c.get("/api/v1/customers", params={"age_min": 151}, headers=h["rm1"])).status_code == 422
    assert (await c.get("/api/v1/customers", headers=h["lobby"])).status_code == 403

    # Pagination with a cursor, sorted; limit bounds.
    page = await c.get("/api/v1/customers", params={"limit": 2, "sort": "created_at"}, headers=h["rm1"])
    first = page.json()
    assert len(first["items"]) == 2 and first["next_cursor"] and first["items"][0]["id"] == mine["id"]
    rest = await c.get(
        "/api/v1/customers", params={"limit": 2, "sort": "created_at", "cursor": first["next_cursor"]}, headers=h["rm1"]
    )
    assert len(rest.json()["items"]) == 2 and rest.json()["next_cursor"] is None
    all_ids = [i["id"] for i in first["items"] + rest.json()["items"]]
    assert len(set(all_ids)) == 4
    assert (await c.get("/api/v1/customers", params={"limit": 501}, headers=h["rm1"])).status_code == 422
    assert (await c.get("/api/v1/customers", params={"sort": "mobile"}, headers=h["rm1"])).status_code == 422

    # Ownership: the team lead within the team, the branch head within the branch, reclaim to the pool.
    assign = f"/api/v1/customers/{mine['id']}/assign"
    assert (await c.post(assign, json={"owner_id": "u-rm2"}, headers=h["rm1"])).status_code == 403
    assert (await c.post(assign, json={"owner_id": "u-rm3"}, headers=h["lead1"])).status_code == 403
    assert (await c.post(assign, json={"owner_id": "u-rm4"}, headers=h["head"])).status_code == 422
    assert (await c.post(assign, json={"owner_id": "u-nobody"}, headers=h["head"])).status_code == 422
    moved = await c.post(assign, json={"owner_id": "u-rm2", "reason": "休假"}, headers=h["lead1"])
    assert moved.status_code == 200 and moved.json()["owner_id"] == "u-rm2"
    moved = await c.post(assign, json={"owner_id": "u-rm3", "reason": "价值优先"}, headers=h["head"])
    assert moved.status_code == 200 and moved.json()["owner_id"] == "u-rm3" and moved.json()["team_id"] == "T2"
    assert await ids("rm3", id_number="110105199001011232") == [mine["id"]]
    assert await ids("rm1", id_number="110105199001011232") == []
    reclaim = f"/api/v1/customers/{mine['id']}/reclaim"
    assert (await c.post(reclaim, json={"reason": "x"}, headers=h["lead1"])).status_code == 404  # now out of T1
    reclaimed = await c.post(reclaim, json={"reason": "RM 离职"}, headers=h["head"])
    assert reclaimed.status_code == 200 and reclaimed.json()["owner_id"] is None
    history = (await c.get(f"/api/v1/customers/{mine['id']}/history", headers=h["head"])).json()["items"]
    assert [e["action"] for e in history] == ["reclaimed", "assigned", "assigned", "created"]
    assert history[0]["note"] == "RM 离职" and history[0]["actor"] == "u-head"

    # Tags: put on, filtered by, in scope only.
    tagged = await c.post(f"/api/v1/customers/{theirs['id']}/tags", json={"add": ["高净值"]}, headers=h["rm2"])
    assert tagged.status_code == 200 and tagged.json()["tags"] == ["高净值"]
    assert (
        await c.post(f"/api/v1/customers/{theirs['id']}/tags", json={"add": ["x"]}, headers=h["rm1"])
    ).status_code == 404
    assert await ids("head", tag="高净值") == [theirs["id"]] and await ids("rm1", tag="高净值") == []
    bad = await c.post(f"/api/v1/customers/{theirs['id']}/tags", json={"add": ["a,b"]}, headers=h["rm2"])
    assert bad.status_code == 422

    # Saved segments: members and their count always inside the asker's scope.
    segment = await c.post("/api/v1/segments", json={"name": "金卡", "filter": {"tiers": ["gold"]}}, headers=h["rm1"])
    assert segment.status_code == 201, segment.text
    assert segment.json()["filter"] == {"tiers": ["gold"]}
    members = f"/api/v1/segments/{segment.json()['id']}/members"
    as_rm1 = (await c.get(members, headers=h["rm1"])).json()
    assert as_rm1["total"] == 2 and len(as_rm1["items"]) == 2
    assert (await c.get(members, headers=h["rm2"])).json()["total"] == 0
    assert (await c.get(members, headers=h["head2"])).status_code == 404
    listed = (await c.get("/api/v1/segments", headers=h["rm2"])).json()
    assert [s["name"] for s in listed["items"]] == ["金卡"] and listed["next_cursor"] is None
    bad = await c.post("/api/v1/segments", json={"name": "x", "filter": {"tiers": ["silver"]}}, headers=h["rm1"])
    assert bad.status_code == 422

    # Holdings from the core-banking feed: AUM, flags and signals; in scope only.
    feed = {
        "holdings": [
            {"product_code": "D1", "product_type": "deposit", "amount": {"amount": "2500000.00", "currency": "CNY"}},
            {"product_code": "L1", "product_type": "loan", "amount": {"amount": "100000", "currency": "CNY"}},
        ]
    }
    url = f"/api/v1/customers/{theirs['id']}/holdings"
    assert (await c.put(url, json=feed, headers=h["rm1"])).status_code == 404
    fed = await c.put(url, json=feed, headers=h["rm2"])
    assert fed.status_code == 200, fed.text
    assert fed.json()["aum"] == {"amount": "2500000.00", "currency": "CNY"}
    assert fed.json()["signals"] == ["large_inflow", "tier_threshold_reached"]
    held = (await c.get(url, headers=h["rm2"])).json()["holdings"]
    assert [x["product_code"] for x in held] == ["D1", "L1"] and held[1]["amount"]["amount"] == "100000.00"
    profile = (await c.get(f"/api/v1/customers/{theirs['id']}", headers=h["rm2"])).json()
    assert profile["value_first"] and profile["familiar"] and profile["product_count"] == 2
    bad = await c.put(
        url,
        json={"holdings": [{"product_code": "X", "product_type": "gold_bar", "amount": {"amount": "1"}}]},
        headers=h["rm2"],
    )
    assert bad.status_code == 422


async def test_an_idempotency_key_binds_to_its_request(gateway: Gateway) -> None:
    h = await _users(gateway, "rm1", "rm2", "head")
    c = gateway.client
    keyed = {**h["rm1"], "Idempotency-Key": "key-bound-0001"}
    body = {"kind": "individual", "name": "李明"}

    first = await c.post("/api/v1/customers", json=body, headers=keyed)
    assert first.status_code == 201, first.text
    again = await c.post("/api/v1/customers", json=body, headers=keyed)
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]

    # Another body under the same key: refused as Stripe does, not answered with the first customer.
    reused = await c.post("/api/v1/customers", json={**body, "name": "王芳"}, headers=keyed)
    assert reused.status_code == 422, reused.text
    assert reused.headers["content-type"].startswith("application/problem+json")
    assert reused.json()["reason"] == "IDEMPOTENCY_KEY_REUSED" and "another request" in reused.json()["detail"]
    # Keys are the caller's own: another user's same key is another request.
    theirs = await c.post("/api/v1/customers", json={**body, "name": "王芳"}, headers={**h["rm2"], **_key(keyed)})
    assert theirs.status_code == 201 and theirs.json()["id"] != first.json()["id"]

    # Two requests with one new key at once: one customer, the other answered 422.
    raced = {**h["rm1"], "Idempotency-Key": "key-race-00001"}
    answers = await asyncio.gather(
        *(c.post("/api/v1/customers", json={**body, "name": name}, headers=raced) for name in ("赵一", "钱二"))
    )
    assert sorted(a.status_code for a in answers) == [201, 422], [a.text for a in answers]
    winner = next(a.json() for a in answers if a.status_code == 201)
    assert next(a for a in answers if a.status_code == 422).json()["reason"] == "IDEMPOTENCY_KEY_REUSED"
    for name in ("赵一", "钱二"):
        listing = await c.get("/api/v1/customers", params={"name": name}, headers=h["head"])
        assert [item["id"] for item in listing.json()["items"]] == ([winner["id"]] if name == winner["name"] else [])


def _key(headers: dict[str, str]) -> dict[str, str]:
    return {"Idempotency-Key": headers["Idempotency-Key"]}
