"""End to end: ``make run``'s stack as real processes — up healthy, a request through the gateway reaches the
services (and their events reach the others), and SIGTERM stops every process cleanly within 10 s."""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest
from conftest import SERVICES, Stack

from crm_testing.logs import not_json_records

pytestmark = pytest.mark.slow


def _login(client: httpx.Client, user: str) -> dict[str, str]:
    reply = client.post("/api/v1/auth/login", json={"username": user, "password": "Demo-Passw0rd!"})
    assert reply.status_code == 200, reply.text
    return {"Authorization": f"Bearer {reply.json()['access_token']}"}


def test_stack_is_ready_and_serves_metrics(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=5) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert all(ready.json()["checks"].values())
        assert client.get("/schema/openapi.json").status_code == 200
    for name in SERVICES:
        metrics = httpx.get(f"http://127.0.0.1:{stack.ports[f'{name}_metrics']}/metrics", timeout=5).text
        assert "crm_outbox_backlog" in metrics and "crm_grpc_server_request_seconds" in metrics


def test_request_through_gateway_reaches_service_and_events_flow(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=5) as client:
        rm1 = _login(client, "rm1")
        created = client.post("/api/v1/customers", json={"kind": "individual", "name": "张伟"}, headers=rm1)
        assert created.status_code == 201, created.text
        customer_id = created.json()["id"]
        got = client.get(f"/api/v1/customers/{customer_id}", headers=rm1)
        assert got.status_code == 200 and got.json()["owner_id"] == "u-rm1"
        assert client.get(f"/api/v1/customers/{customer_id}", headers=_login(client, "rm3")).status_code == 404

        # The customer.created event reaches the notification service: rm1's inbox gets a message.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            inbox = client.get("/api/v1/me/inbox", headers=rm1)
            assert inbox.status_code == 200, inbox.text
            if any(m["kind"] == "customer_assigned" for m in inbox.json()["items"]):
                break
            time.sleep(0.1)
        else:
            pytest.fail("customer.created never reached rm1's inbox")


def test_sigterm_stops_every_process_within_10_s_with_code_0(stack: Stack) -> None:
    # The supervisor gives each part 10 s after SIGTERM and kills it after that, which makes its exit code
    # non-zero: exit 0 and "stopped cleanly" mean every part drained and exited 0 within the 10 s.
    stack.process.send_signal(signal.SIGTERM)
    code = stack.process.wait(timeout=60)
    log = stack.log.read_text(errors="replace")
    assert code == 0, log[-4000:]
    assert "stopped cleanly" in log and "killing it" not in log
    # Every part logs JSON lines from start to stop (the supervisor's own lines aside): nothing, such as a web
    # framework's default logging set-up, switches a process to another format on the way.
    parts = [line for line in log.splitlines() if line and not line.startswith(("[crm]", "CRM gateway ready"))]
    not_json = not_json_records(parts)
    assert not not_json, not_json[:5]
    assert {"gateway", *(name.lower() for name in SERVICES)} <= {json.loads(line)["service"] for line in parts}
