"""``CRM_GATEWAY_WORKERS=2``: the gateway as uvicorn's multi-process server, as a real process. The parent
prepares the database once (two workers migrating and seeding the same SQLite file at once left one of them
dead on "database is locked"); each worker logs JSON lines; SIGTERM stops them all with exit code 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from crm_testing.logs import not_json_records
from crm_testing.nats_server import free_port

pytestmark = pytest.mark.slow


def test_two_workers_start_serve_log_json_and_stop_cleanly(nats_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "GATEWAY_"))},
        "CRM_DATA_DIR": str(tmp_path),
        "CRM_NATS_URL": nats_url,
        "CRM_GATEWAY_PORT": str(port),
        "CRM_GATEWAY_WORKERS": "2",
        "CRM_DEMO": "1",
    }
    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "crm_gateway"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        # Both workers serve (connections spread over them); every login works, whichever answers.
        for _ in range(8):
            with httpx.Client(base_url=base, timeout=5) as client:
                reply = client.post("/api/v1/auth/login", json={"username": "rm1", "password": "Demo-Passw0rd!"})
                assert reply.status_code == 200, reply.text
        text = log.read_text()
        assert text.count('"msg": "Application startup complete."') == 2, text[-3000:]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert code == 0, lines[-20:]
    not_json = not_json_records(lines)
    assert not not_json, not_json[:5]
    assert all(json.loads(line)["service"] == "gateway" for line in lines)
