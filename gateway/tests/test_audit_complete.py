"""The audit trail misses no record: many users' concurrent requests mixed with hostile ones (a NUL in the
path, control characters in bodies) leave exactly one record each, with the status the caller saw; and a
record that cannot be written fails its own request (503), never another user's."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from crm_gateway.audit import AUDIT_WRITE_FAILURES, audit_log, verify
from crm_platform.db import create_engine, normalise_url
from gateway_harness import Gateway


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The gateway's database on each backend (PostgreSQL refuses a NUL in text, which once took a whole batch
    of other users' records down); on SQLite a file of its own, beside the customer service's."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'gateway-audit.db'}"
    return str(request.getfixturevalue("postgres_databases").create())


@pytest.fixture
def gateway_env(db_url: str) -> dict[str, str]:
    return {"GATEWAY_DATABASE_URL": db_url}


async def _records(db_url: str) -> dict[str, list[dict[str, Any]]]:
    engine = create_engine(normalise_url(db_url))
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(audit_log).order_by(audit_log.c.seq))).all()
        assert await verify(engine) == (len(rows), None)
    finally:
        await engine.dispose()
    by_request: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_request.setdefault(row.request_id, []).append(dict(row._mapping))
    return by_request


async def test_concurrent_users_and_hostile_requests_leave_one_record_each(gateway: Gateway, db_url: str) -> None:
    users = {name: await gateway.bearer(name) for name in ("rm1", "rm2", "rm3", "head", "admin")}
    counter = itertools.count()
    # (user, method, path, body): ordinary changes by several users and hostile requests among them.
    ordinary = [
        ("rm1", "POST", "/api/v1/customers", {"kind": "individual", "name": "张三"}),
        ("rm2", "POST", "/api/v1/customers", {"kind": "individual", "name": "李四"}),
        ("rm3", "POST", "/api/v1/customers", {"kind": "corporate", "name": "某某公司"}),
        ("admin", "PATCH", "/api/v1/admin/branches/BJ001", {"name": "Beijing Chaoyang"}),
    ]
    hostile = [
        ("rm1", "POST", "/api/v1/customers/%00/assign", {"owner_id": "u-rm2"}),
        ("rm2", "POST", "/api/v1/customers/a%00b/tags", {"add": ["x"]}),
        ("head", "POST", "/api/v1/customers/%0a%0d%1b/reclaim", {"reason": "x"}),
        ("rm3", "POST", "/api/v1/customers", {"kind": "individual", "name": "bad\u0000name"}),
        ("rm1", "PATCH", "/api/v1/customers/%00", {"note": "\u0000"}),
    ]
    calls = [(*call, f"audit-{next(counter)}") for _ in range(12) for call in (*ordinary, *hostile)]

    async def send(user: str, method: str, path: str, body: Any, request_id: str) -> tuple[str, int]:
        headers = {**users[user], "X-Request-ID": request_id}
        reply = await gateway.client.request(method, path, json=body, headers=headers)
        return request_id, reply.status_code

    answered = dict(await asyncio.gather(*(send(*call) for call in calls)))
    assert all(status < 500 for status in answered.values()), answered
    assert any(status == 201 for status in answered.values())  # the ordinary ones went through

    records = await _records(db_url)
    missing = sorted(set(answered) - set(records))
    assert not missing, f"requests without an audit record: {missing}"
    doubled = sorted(r for r in answered if len(records[r]) != 1)
    assert not doubled, f"requests with more than one record: {doubled}"
    wrong = {
        r: (records[r][0]["outcome"], status) for r, status in answered.items() if records[r][0]["outcome"] != status
    }
    assert not wrong, f"records whose outcome is not the status answered: {wrong}"
    # A control character in the path is kept visibly, not dropped or allowed to refuse the record.
    nul_request = next(request_id for _, _, path, _, request_id in calls if path.endswith("%00/assign"))
    assert records[nul_request][0]["resource"] == "/api/v1/customers/\\x00/assign"


async def test_a_record_that_cannot_be_written_fails_its_own_request(gateway: Gateway, db_url: str) -> None:
    rm1 = await gateway.bearer("rm1")
    engine = create_engine(normalise_url(db_url))
    failures_before = AUDIT_WRITE_FAILURES._value.get()
    try:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE audit_log RENAME TO audit_log_away"))
        try:
            refused = await gateway.client.post(
                "/api/v1/customers", json={"kind": "individual", "name": "王五"}, headers=rm1
            )
        finally:
            async with engine.begin() as conn:
                await conn.execute(text("ALTER TABLE audit_log_away RENAME TO audit_log"))
    finally:
        await engine.dispose()
    assert refused.status_code == 503, refused.text
    body = refused.json()
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert body["reason"] == "AUDIT_UNAVAILABLE" and body["request_id"] == refused.headers["x-request-id"]
    assert "王五" not in refused.text  # the handler's answer is not shown
    assert AUDIT_WRITE_FAILURES._value.get() == failures_before + 1
    # Reads are not audited and keep working; the next change is recorded again.
    again = await gateway.client.post("/api/v1/customers", json={"kind": "individual", "name": "赵六"}, headers=rm1)
    assert again.status_code == 201, again.text
    assert again.headers["x-request-id"] in await _records(db_url)
