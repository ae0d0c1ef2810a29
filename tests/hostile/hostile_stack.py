"""What the hostile-input suite probes (:class:`Hostile`), and how its stack is prepared: the real processes
(``make run``'s supervisor) on PostgreSQL (see the conftest) and embedded NATS, with the rate limits raised so
the corpus is answered rather than throttled; a token for every role of the demo organisation; a customer in
another branch than every prober's. (A module of its own, not the conftest: ``tests/e2e`` has a conftest of the
same module name.)"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from corpus import Operation, operations

from crm_gateway.app import ROUTES
from crm_gateway.policy import OPENAPI_PATH
from crm_testing.demo import DEMO_PASSWORD, ROLE_USERS
from crm_testing.stack_process import StackProcess, stack_process


@dataclass
class Hostile:
    """What the suite probes: the stack, a client bound to it, tokens by role, the operations of the OpenAPI
    document (each with its declared permission) and the ids the probes put in path parameters."""

    stack: StackProcess
    client: httpx.Client
    tokens: dict[str, str]
    operations: list[Operation]
    base_ids: dict[str, str]


def _permissions() -> dict[tuple[str, str], str]:
    """(method, OpenAPI path template) → the permission the route declares."""
    from litestar import Litestar

    app = Litestar(route_handlers=ROUTES)
    found = {}
    for route in app.routes:
        if route.path.startswith(OPENAPI_PATH):
            continue
        template = str(route.path).replace(":str", "").replace(":int", "")
        for handler in route.route_handlers:  # type: ignore[union-attr]
            for method in handler.http_methods:
                found[(method, template)] = handler.opt.get("permission", "")
    return found


def _login(client: httpx.Client, username: str) -> str:
    reply = client.post("/api/v1/auth/login", json={"username": username, "password": DEMO_PASSWORD})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["access_token"])


@contextlib.contextmanager
def hostile_stack(tmp_path: Path, databases: Mapping[str, str] | None = None) -> Iterator[Hostile]:
    """The stack started under ``tmp_path`` (on ``databases``: ``<PART>_DATABASE_URL`` settings; SQLite files
    without), signed in as every role, with the foreign customer created."""
    env = {
        **(databases or {}),
        "CRM_GATEWAY_API_RATE_PER_SECOND": "100000",
        "CRM_GATEWAY_LOGIN_RATE_PER_MINUTE": "100000",
        "CRM_GATEWAY_UPLOAD_RATE_PER_MINUTE": "100000",
    }
    with (
        stack_process(tmp_path, env) as stack,
        httpx.Client(base_url=stack.url, timeout=30) as client,
    ):
        tokens = {role: _login(client, user) for role, user in ROLE_USERS.items()}
        # rm4 works in SH001, every prober in BJ001 (or in no branch): no prober may get a 2xx on it.
        rm4 = {"Authorization": f"Bearer {_login(client, 'rm4')}"}
        created = client.post("/api/v1/customers", json={"kind": "individual", "name": "外行客户"}, headers=rm4)
        assert created.status_code == 201, created.text
        document: dict[str, Any] = client.get("/schema/openapi.json").json()
        permissions = _permissions()
        ops = operations(document)
        for op in ops:
            op.permission = permissions.get((op.method, op.template), "")
        base_ids = {"customer_id": created.json()["id"], "branch_id": "SH001", "team_id": "T3", "user_id": "u-rm4"}
        yield Hostile(stack, client, tokens, ops, base_ids)
