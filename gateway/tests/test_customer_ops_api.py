"""Customer operations through the gateway (real uvicorn, real customer service, SQLite, NATS): bulk assign,
the batch holdings feed, the managed tag catalog, and the last-contact and name-prefix filters — validated at
the door, with outcomes per customer, inside the caller's scope."""

from __future__ import annotations

from typing import Any

import pytest

from gateway_harness import Gateway


@pytest.fixture
def gateway_env() -> dict[str, str]:
    return {"CRM_GATEWAY_LOGIN_RATE_PER_MINUTE": "1000"}


async def _create(gateway: Gateway, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    reply = await gateway.client.post("/api/v1/customers", json={"kind": "individual", **fields}, headers=headers)
    assert reply.status_code == 201, reply.text
    return reply.json()


async def test_bulk_assign_and_batch_holdings(gateway: Gateway) -> None:
    h = {u: await gateway.bearer(u) for u in ("rm1", "rm2", "lead1", "head", "head2")}
    c = gateway.client
    mine = await _create(gateway, h["rm1"], name="甲")
    theirs = await _create(gateway, h["rm2"], name="乙")
    far = await _create(gateway, h["head2"], name="丙")

    url = "/api/v1/customers/assign-bulk"
    assert (
        await c.post(url, json={"customer_ids": [mine["id"]], "owner_id": "u-rm3"}, headers=h["rm1"])
    ).status_code == 403
    refused = await c.post(url, json={"customer_ids": [mine["id"], mine["id"]], "owner_id": "u-rm3"}, headers=h["head"])
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "customer_ids"
    assert (await c.post(url, json={"customer_ids": [], "owner_id": "u-rm3"}, headers=h["head"])).status_code == 422
    nobody = await c.post(url, json={"customer_ids": [mine["id"]], "owner_id": "u-nobody"}, headers=h["head"])
    assert nobody.status_code == 422 and nobody.json()["errors"][0]["field"] == "owner_id"

    body = {"customer_ids": [mine["id"], far["id"], theirs["id"]], "owner_id": "u-rm3", "reason": "团队调整"}
    as_lead = (await c.post(url, json=body, headers=h["lead1"])).json()
    assert [r["outcome"] for r in as_lead["results"]] == ["forbidden", "not_found", "forbidden"]
    done = await c.post(url, json=body, headers=h["head"])
    assert done.status_code == 200, done.text
    assert [(r["customer_id"], r["outcome"]) for r in done.json()["results"]] == [
        (mine["id"], "assigned"),
        (far["id"], "not_found"),
        (theirs["id"], "assigned"),
    ]
    assert done.json()["counts"] == {"assigned": 2, "not_found": 1}
    moved = (await c.get(f"/api/v1/customers/{mine['id']}", headers=h["head"])).json()
    assert moved["owner_id"] == "u-rm3" and moved["team_id"] == "T2"
    history = (await c.get(f"/api/v1/customers/{mine['id']}/history", headers=h["head"])).json()["items"]
    assert history[0]["action"] == "assigned" and history[0]["note"] == "团队调整"

    feed = "/api/v1/customers/holdings"
    snapshot = {
        "customer_id": mine["id"],
        "holdings": [{"product_code": "D1", "product_type": "deposit", "amount": {"amount": "700000.00"}}],
    }
    bad_amount = {
        "customer_id": far["id"],
        "holdings": [{"product_code": "D1", "product_type": "deposit", "amount": {"amount": "-1"}}],
    }
    # Refused at the door: a bad amount, an unknown product type, a customer twice.
    assert (await c.put(feed, json={"snapshots": [bad_amount]}, headers=h["head"])).status_code == 422
    unknown_type = {**snapshot, "holdings": [{**snapshot["holdings"][0], "product_type": "gold_bar"}]}
    assert (await c.put(feed, json={"snapshots": [unknown_type]}, headers=h["head"])).status_code == 422
    twice = await c.put(feed, json={"snapshots": [snapshot, snapshot]}, headers=h["head"])
    assert twice.status_code == 422 and twice.json()["errors"][0]["field"] == "snapshots[1].customer_id"
    assert (await c.put(feed, json={"snapshots": []}, headers=h["head"])).status_code == 422

    duplicate_code = {"customer_id": theirs["id"], "holdings": [snapshot["holdings"][0]] * 2}
    out_of_scope = {"customer_id": far["id"], "holdings": []}
    reply = await c.put(feed, json={"snapshots": [snapshot, duplicate_code, out_of_scope]}, headers=h["head"])
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [r["outcome"] for r in results] == ["updated", "invalid", "not_found"]
    assert results[0]["aum"] == {"amount": "700000.00", "currency": "CNY"}
    assert results[0]["signals"] == ["large_inflow", "tier_threshold_reached"]
    assert results[1]["errors"] == [{"field": "holdings[1].product_code", "message": "appears twice"}]
    assert reply.json()["counts"] == {"updated": 1, "invalid": 1, "not_found": 1}
    # An RM's feed reaches only the RM's own customers.
    as_rm2 = (await c.put(feed, json={"snapshots": [snapshot]}, headers=h["rm2"])).json()
    assert as_rm2["results"][0]["outcome"] == "not_found"


async def test_managed_tags_and_filters(gateway: Gateway) -> None:
    h = {u: await gateway.bearer(u) for u in ("rm1", "rm2", "lead1", "head", "admin", "auditor")}
    c = gateway.client
    tags = "/api/v1/managed-tags"
    made = await c.post(tags, json={"name": "代发工资", "applicable_roles": ["branch_head"]}, headers=h["head"])
    assert made.status_code == 201, made.text
    assert made.json()["branch_id"] == "BJ001" and made.json()["applicable_roles"] == ["branch_head"]
    wide = await c.post(tags, json={"name": "高净值", "description": "AUM ≥ 600万"}, headers=h["admin"])
    assert wide.status_code == 201 and wide.json()["branch_id"] is None
    assert (await c.post(tags, json={"name": "高净值"}, headers=h["head"])).status_code == 409
    assert (
        await c.post(tags, json={"name": "x", "applicable_roles": ["auditor"]}, headers=h["head"])
    ).status_code == 422
    assert (await c.post(tags, json={"name": "x"}, headers=h["rm1"])).status_code == 403
    assert [t["name"] for t in (await c.get(tags, headers=h["rm1"])).json()["items"]] == sorted(["代发工资", "高净值"])
    assert (await c.get(tags, headers=h["auditor"])).status_code == 403

    mine = await _create(gateway, h["rm1"], name="李明")
    other = await _create(gateway, h["rm1"], name="李_四")
    theirs = await _create(gateway, h["rm2"], name="李雷")
    put = f"/api/v1/customers/{mine['id']}/tags"
    unknown = await c.post(put, json={"add_managed": ["不存在"]}, headers=h["rm1"])
    assert unknown.status_code == 422
    assert unknown.json()["errors"] == [
        {"field": "add_managed[0]", "message": "'不存在' is not in the managed tag catalog"}
    ]
    assert (await c.post(put, json={"add": ["代发工资"]}, headers=h["rm1"])).status_code == 422
    assert (await c.post(put, json={"add_managed": ["代发工资"]}, headers=h["rm1"])).status_code == 403
    tagged = await c.post(put, json={"add_managed": ["高净值", "代发工资"]}, headers=h["head"])
    assert tagged.status_code == 200 and tagged.json()["tags"] == sorted(["代发工资", "高净值"])

    async def ids(who: str, **params: Any) -> set[str]:
        reply = await c.get("/api/v1/customers", params=params, headers=h[who])
        assert reply.status_code == 200, reply.text
        return {item["id"] for item in reply.json()["items"]}

    assert await ids("rm1", name_prefix="李") == {mine["id"], other["id"]}
    assert await ids("rm1", name_prefix="李_") == {other["id"]}
    assert await ids("head", name_prefix="李") == {mine["id"], other["id"], theirs["id"]}
    # Nobody has been contacted yet: everyone was last contacted "before" any date, inside the scope.
    assert await ids("rm1", last_contact_before="2020-01-01T00:00:00Z") == {mine["id"], other["id"]}
    naive = await c.get("/api/v1/customers", params={"last_contact_before": "2020-01-01T00:00:00"}, headers=h["rm1"])
    assert naive.status_code == 422 and naive.json()["errors"][0]["field"] == "last_contact_before"
    segment = await c.post(
        "/api/v1/segments", json={"name": "久未联系", "filter": {"no_contact_days": 30}}, headers=h["rm1"]
    )
    assert segment.status_code == 201 and segment.json()["filter"] == {"no_contact_days": 30}
    members = (await c.get(f"/api/v1/segments/{segment.json()['id']}/members", headers=h["rm1"])).json()
    assert {m["id"] for m in members["items"]} == {mine["id"], other["id"]} and members["total"] == 2
    bad = await c.post(
        "/api/v1/segments",
        json={"name": "x", "filter": {"last_contact_before": "2026-01-01T00:00:00"}},
        headers=h["rm1"],
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "filter.last_contact_before"


# Every route that names one customer, with a body the route accepts: outside the caller's scope each must
# answer 404, exactly as for a customer that does not exist (no existence leak).
PER_CUSTOMER_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "", None),
    ("PATCH", "", {"occupation": "x"}),
    ("GET", "/history", None),
    ("POST", "/assign", {"owner_id": "u-rm1"}),
    ("POST", "/reclaim", {"reason": "x"}),
    ("POST", "/tags", {"add": ["x"]}),
    ("GET", "/holdings", None),
    ("PUT", "/holdings", {"holdings": []}),
    ("POST", "/reveal", {"fields": ["mobile"], "purpose": "客户来电核实身份"}),
    ("POST", "/merge", {"duplicate_id": "unknown", "reason": "重复建档"}),
]


async def test_another_rms_customer_is_unreachable_by_any_route_or_filter(gateway: Gateway) -> None:
    h = {u: await gateway.bearer(u) for u in ("rm1", "rm3", "lead1", "head")}
    c = gateway.client
    hidden = await _create(
        gateway,
        h["rm3"],
        name="赵敏",
        id_type="resident_id",
        id_number="110105199001011232",
        mobile="13800138000",
        gender="female",
        birth_date="1990-01-01",
        tier="gold",
    )
    tagged = await c.post(f"/api/v1/customers/{hidden['id']}/tags", json={"add": ["潜力客户"]}, headers=h["rm3"])
    assert tagged.status_code == 200
    mine = await _create(gateway, h["rm1"], name="赵敏", tier="gold")
    for who in ("rm1", "lead1"):  # own scope, and a team lead of another team
        for method, suffix, body in PER_CUSTOMER_ROUTES:
            headers = {**h[who], "If-Match": '"1"'}
            reply = await c.request(method, f"/api/v1/customers/{hidden['id']}{suffix}", json=body, headers=headers)
            # An RM holds no customer:assign nor customer:merge: the guard refuses before any lookup, for any id.
            expected = 403 if who == "rm1" and suffix in ("/assign", "/reclaim", "/merge") else 404
            assert reply.status_code == expected, (who, method, suffix, reply.status_code, reply.text)
            assert "赵敏" not in reply.text
        one = {"customer_ids": [hidden["id"]], "owner_id": "u-rm1"}
        bulk = await c.post("/api/v1/customers/assign-bulk", json=one, headers=h[who])
        if who == "rm1":
            assert bulk.status_code == 403  # an RM assigns nothing
        else:
            assert [r["outcome"] for r in bulk.json()["results"]] == ["not_found"]
        snapshots = {"snapshots": [{"customer_id": hidden["id"], "holdings": []}]}
        feed = await c.put("/api/v1/customers/holdings", json=snapshots, headers=h[who])
        assert feed.json()["results"][0]["outcome"] == "not_found"
        for params in (
            {"id_number": "110105199001011232"},
            {"mobile": "13800138000"},
            {"name": "赵敏"},
            {"name_prefix": "赵"},
            {"customer_no": hidden["customer_no"]},
            {"tag": "潜力客户"},
            {"tier": "gold"},
            {"owner_id": "u-rm3"},
            {"team_id": "T2"},
            {"branch_id": "BJ001"},
            {"last_contact_before": "2100-01-01T00:00:00Z"},
            {"created_from": "2000-01-01T00:00:00Z"},
            {},
        ):
            reply = await c.get("/api/v1/customers", params=params, headers=h[who])
            assert reply.status_code == 200 and hidden["id"] not in reply.text, (who, params)
        segment = await c.post(
            "/api/v1/segments", json={"name": f"金卡-{who}", "filter": {"tiers": ["gold"]}}, headers=h[who]
        )
        members = (await c.get(f"/api/v1/segments/{segment.json()['id']}/members", headers=h[who])).json()
        assert [m["id"] for m in members["items"]] == [mine["id"]] and members["total"] == 1
    # The same routes reach it for its owner's branch head: the 404s above were scope, not broken calls.
    assert (await c.get(f"/api/v1/customers/{hidden['id']}/history", headers=h["head"])).status_code == 200
    found = await c.get("/api/v1/customers", params={"id_number": "110105199001011232"}, headers=h["head"])
    assert [i["id"] for i in found.json()["items"]] == [hidden["id"]]
