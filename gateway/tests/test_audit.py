"""The audit trail: every state-changing call recorded, readable by auditors only, chain verifies and
detects an edited row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_gateway.audit import AuditEntry, AuditLog, verify
from crm_platform.db import create_engine
from crm_platform.migrations import migrate
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


@pytest.fixture
async def audit_engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """The gateway's own schema, migrated on SQLite and on PostgreSQL."""
    engine = create_engine(make_url(db_url))
    await migrate(engine, "crm_gateway")
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_concurrent_appends_are_group_committed_into_one_unbroken_chain(audit_engine: AsyncEngine) -> None:
    """Many callers at once: each gets its own committed record, in one chain with no fork or gap."""
    log = AuditLog(audit_engine)
    entries = [
        AuditEntry(f"u-{i % 7}", "rm", "POST", f"/api/v1/customers/{i}", 201, f"req-{i}", "127.0.0.1", {"n": i})
        for i in range(300)
    ]
    seqs = await asyncio.gather(*(log.append(e) for e in entries))
    await log.close()
    async with audit_engine.connect() as conn:
        rows = {row.seq: row.request_id for row in await conn.execute(text("SELECT seq, request_id FROM audit_log"))}
    # Every caller was told the sequence number of its own committed record.
    assert len(rows) == 300 and sorted(seqs) == sorted(rows)
    assert all(rows[seq] == e.request_id for seq, e in zip(seqs, entries, strict=True))
    assert await verify(audit_engine) == (300, None)


async def test_a_failed_write_is_reported_to_its_callers_and_later_appends_still_chain(
    audit_engine: AsyncEngine,
) -> None:
    log = AuditLog(audit_engine)
    await log.append(AuditEntry("u-1", "rm", "POST", "/x", 201, "req-before", "127.0.0.1", {}))
    async with audit_engine.begin() as conn:
        await conn.execute(text("ALTER TABLE audit_log RENAME TO audit_log_away"))
    try:
        with pytest.raises(Exception, match="audit_log"):
            await asyncio.gather(
                *(log.append(AuditEntry("u-1", "rm", "POST", "/x", 201, f"r{i}", "::1", {})) for i in range(3))
            )
    finally:
        async with audit_engine.begin() as conn:
            await conn.execute(text("ALTER TABLE audit_log_away RENAME TO audit_log"))
    await log.append(AuditEntry("u-1", "rm", "POST", "/x", 201, "req-after", "127.0.0.1", {}))
    await log.close()
    assert await verify(audit_engine) == (2, None)


async def test_replicas_appending_at_once_keep_one_chain(audit_engine: AsyncEngine) -> None:
    """Several gateway replicas (an AuditLog each, each remembering the head it last wrote) append at once: on
    PostgreSQL without a lock, so a replica with a stale head must be refused and chain again; no fork, no
    record lost, every caller told its own record."""
    replicas = [AuditLog(audit_engine) for _ in range(3)]
    for n, log in enumerate(replicas):  # each knows a head, which the others' appends then make stale
        await log.append(AuditEntry("u-0", "rm", "POST", "/warm", 201, f"warm-{n}", "127.0.0.1", {}))

    async def burst(n: int, log: AuditLog) -> list[int]:
        out = []
        for round_ in range(10):
            entries = [
                AuditEntry("u-1", "rm", "POST", "/x", 201, f"r{n}-{round_}-{i}", "10.0.0.1", {"i": i}) for i in range(5)
            ]
            out.extend(await asyncio.gather(*(log.append(e) for e in entries)))
        return out

    results = await asyncio.gather(*(burst(n, log) for n, log in enumerate(replicas)))
    for log in replicas:
        await log.close()
    seqs = [seq for result in results for seq in result]
    assert len(seqs) == len(set(seqs)) == 150
    async with audit_engine.connect() as conn:
        count = (await conn.execute(text("SELECT count(*) FROM audit_log"))).scalar()
        forks = (
            await conn.execute(
                text("SELECT count(*) FROM (SELECT prev_hash FROM audit_log GROUP BY prev_hash HAVING count(*) > 1) f")
            )
        ).scalar()
    assert count == 153 and forks == 0
    assert await verify(audit_engine) == (153, None)
