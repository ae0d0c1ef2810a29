"""Team leads and branch heads: who may be named, the events that carry them, and clearing a holder who no longer
qualifies."""

from __future__ import annotations

from crm.identity.v1 import events_pb2
from gateway_harness import Gateway, outbox_events


async def _create_user(
    gateway: Gateway, admin: dict[str, str], username: str, role: str, branch: str, team: str | None
) -> str:
    body = {"username": username, "display_name": username, "roles": [role], "branch_id": branch, "team_id": team}
    reply = await gateway.client.post("/api/v1/admin/users", json=body, headers=admin)
    assert reply.status_code == 201, reply.text
    return str(reply.json()["user"]["id"])


async def test_the_demo_names_leads_and_heads_and_lists_show_them(gateway: Gateway) -> None:
    admin = await gateway.bearer("admin")
    listed = (await gateway.client.get("/api/v1/admin/branches", headers=admin)).json()["items"]
    assert {b["id"]: b["head_id"] for b in listed} == {"BJ001": "u-head", "SH001": "u-head2"}
    teams = (await gateway.client.get("/api/v1/admin/teams", headers=admin)).json()["items"]
    assert {t["id"]: t["lead_id"] for t in teams} == {"T1": "u-lead1", "T2": None, "T3": None}
    team = await gateway.client.get("/api/v1/admin/teams/T1", headers=admin)
    assert team.status_code == 200 and team.json()["lead_id"] == "u-lead1"
    branch = await gateway.client.get("/api/v1/admin/branches/SH001", headers=admin)
    assert branch.status_code == 200 and branch.json()["head_id"] == "u-head2"
    assert (await gateway.client.get("/api/v1/admin/teams/T9", headers=admin)).status_code == 404


async def test_a_team_lead_must_be_an_active_member_holding_team_lead(gateway: Gateway) -> None:
    admin = await gateway.bearer("admin")
    other_lead = await _create_user(gateway, admin, "lead2", "team_lead", "BJ001", "T2")
    for lead, why in [
        ("u-rm1", "does not hold the role team_lead"),  # a member of T1, but an RM
        (other_lead, "is in team T2, not T1"),
        ("u-head2", "works in branch SH001"),
        ("u-nobody", "does not exist"),
    ]:
        reply = await gateway.client.patch("/api/v1/admin/teams/T1", json={"lead_id": lead}, headers=admin)
        assert reply.status_code == 422, reply.text
        (error,) = reply.json()["errors"]
        assert error["field"] == "lead_id" and why in error["message"], error

    cleared = await gateway.client.patch("/api/v1/admin/teams/T1", json={"lead_id": None}, headers=admin)
    assert cleared.status_code == 200 and cleared.json()["lead_id"] is None
    renamed = await gateway.client.patch("/api/v1/admin/teams/T2", json={"name": "Private banking"}, headers=admin)
    assert renamed.json()["name"] == "Private banking" and renamed.json()["lead_id"] is None
    named = await gateway.client.patch("/api/v1/admin/teams/T2", json={"lead_id": other_lead}, headers=admin)
    assert named.status_code == 200 and named.json()["lead_id"] == other_lead
    again = await gateway.client.patch("/api/v1/admin/teams/T1", json={"lead_id": ""}, headers=admin)
    assert again.json()["lead_id"] is None
    assert (await gateway.client.patch("/api/v1/admin/teams/T9", json={"name": "x"}, headers=admin)).status_code == 404

    changes = [
        (m.team_id, m.name, m.lead_id)
        for _, m in await outbox_events(gateway.app.state.engine, "crm.identity.team.updated", events_pb2.TeamChanged)
    ]
    assert changes == [
        ("T1", "Wealth team 1", ""),
        ("T2", "Private banking", ""),
        ("T2", "Private banking", other_lead),
        ("T1", "Wealth team 1", ""),
    ]

    # A lead disabled is a lead no more: the team's lead is cleared with its event, in the same transaction.
    assert (await gateway.client.post(f"/api/v1/admin/users/{other_lead}/disable", headers=admin)).status_code == 200
    assert (await gateway.client.get("/api/v1/admin/teams/T2", headers=admin)).json()["lead_id"] is None
    *_, (_, last) = await outbox_events(gateway.app.state.engine, "crm.identity.team.updated", events_pb2.TeamChanged)
    assert (last.team_id, last.lead_id) == ("T2", "")
    disabled = await gateway.client.patch("/api/v1/admin/teams/T2", json={"lead_id": other_lead}, headers=admin)
    assert disabled.status_code == 422 and "not active" in disabled.json()["errors"][0]["message"]


async def test_a_branch_head_must_be_an_active_user_of_the_branch_holding_branch_head(gateway: Gateway) -> None:
    admin = await gateway.bearer("admin")
    for head in ("u-head2", "u-rm1", "u-nobody"):
        reply = await gateway.client.patch("/api/v1/admin/branches/BJ001", json={"head_id": head}, headers=admin)
        assert reply.status_code == 422 and reply.json()["errors"][0]["field"] == "head_id", reply.text
    second = await _create_user(gateway, admin, "head3", "branch_head", "BJ001", None)
    named = await gateway.client.patch("/api/v1/admin/branches/BJ001", json={"head_id": second}, headers=admin)
    assert named.status_code == 200 and named.json()["head_id"] == second
    renamed = await gateway.client.patch("/api/v1/admin/branches/BJ001", json={"name": "Beijing CBD"}, headers=admin)
    assert renamed.json()["head_id"] == second  # absent: kept

    # Moved to another branch: no longer the head of this one.
    moved = await gateway.client.patch(f"/api/v1/admin/users/{second}", json={"branch_id": "SH001"}, headers=admin)
    assert moved.status_code == 200, moved.text
    assert (await gateway.client.get("/api/v1/admin/branches/BJ001", headers=admin)).json()["head_id"] is None
    # Roles taken away: head2 stops heading SH001.
    await gateway.client.put("/api/v1/admin/users/u-head2/roles", json={"roles": ["rm"]}, headers=admin)
    assert (await gateway.client.get("/api/v1/admin/branches/SH001", headers=admin)).json()["head_id"] is None

    changes = [
        (m.branch_id, m.name, m.head_id)
        for _, m in await outbox_events(
            gateway.app.state.engine, "crm.identity.branch.updated", events_pb2.BranchChanged
        )
    ]
    assert changes == [
        ("BJ001", "Beijing Chaoyang Branch", second),
        ("BJ001", "Beijing CBD", second),
        ("BJ001", "Beijing CBD", ""),
        ("SH001", "Shanghai Pudong Branch", ""),
    ]
