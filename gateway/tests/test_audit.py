"""The audit trail: every state-changing call recorded, readable by auditors only, chain verifies and
detects an edited row."""

from __future__ import annotations

from sqlalchemy import text

from crm_gateway.audit import verify
from gateway_harness import PASSWORD, Gateway


async def test_state_changes_are_audited_and_the_chain_verifies(gateway: Gateway) -> None:
    rm1 = await gateway.bearer("rm1")
    created = await gateway.client.post("/api/v1/customers", json={"kind": "individual", "name": "李明"}, headers=rm1)
    assert created.status_code == 201
    refused = await gateway.client.post("/api/v1/auth/login", json={"username": "rm2", "password": "wrong"})
    assert refused.status_code == 401

    auditor = await gateway.bearer("auditor")
    reply = await gateway.client.get("/api/v1/audit", params={"resource": "/api/v1/customers"}, headers=auditor)
    assert reply.status_code == 200, reply.text
    [record] = reply.json()["items"]
    assert record["actor_id"] == "u-rm1" and record["actor_roles"] == ["rm"] and record["outcome"] == 201
    assert record["action"] == "POST" and record["request_id"] == created.headers["x-request-id"]
    assert record["client_addr"] == "127.0.0.1"

    logins = await gateway.client.get("/api/v1/audit", params={"actor": "anonymous", "limit": 500}, headers=auditor)
    failures = [r for r in logins.json()["items"] if r["outcome"] == 401]
    assert failures and failures[-1]["detail"] == {"username": "rm2"}

    # Only auditors read it.
    assert (await gateway.client.get("/api/v1/audit", headers=rm1)).status_code == 403

    checked, broken = await verify(gateway.app.state.engine)
    assert broken is None and checked >= 4


async def test_the_log_is_append_only_and_an_edited_row_breaks_the_chain(gateway: Gateway) -> None:
    for user in ("rm1", "rm2", "head"):
        await gateway.client.post("/api/v1/auth/login", json={"username": user, "password": PASSWORD})
    engine = gateway.app.state.engine
    async with engine.begin() as conn:
        failed = False
        try:
            async with conn.begin_nested():
                await conn.execute(text("UPDATE audit_log SET outcome = 200 WHERE seq = 2"))
        except Exception:
            failed = True
        assert failed, "the database must refuse updates of the audit log"
    # A DBA who bypasses the trigger still cannot hide an edit: the chain breaks at that record.
    async with engine.begin() as conn:
        await conn.execute(text("DROP TRIGGER audit_log_no_update"))
        await conn.execute(text("UPDATE audit_log SET actor_id = 'someone-else' WHERE seq = 2"))
    checked, broken = await verify(engine)
    assert broken == 2 and checked == 1
