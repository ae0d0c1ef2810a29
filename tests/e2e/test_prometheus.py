"""A real Prometheus (Debian's package) scrapes the ``make run`` stack: every part's target is up and its
request, error, latency, outbox and consumer metrics are there."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml
from conftest import SERVICES, Stack

from crm_testing.nats_server import free_port
from crm_testing.plugin import in_ci

pytestmark = pytest.mark.slow

PARTS = ["gateway", *[s.lower() for s in SERVICES]]


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        if in_ci():
            pytest.fail("prometheus not installed (make install adds Debian's prometheus package)")
        pytest.skip("prometheus not installed: apt-get install prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    scrape = [
        {
            "job_name": "gateway",
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [stack.url.removeprefix("http://")]}],
        }
    ]
    scrape += [
        {"job_name": name.lower(), "static_configs": [{"targets": [f"127.0.0.1:{stack.ports[f'{name}_metrics']}"]}]}
        for name in SERVICES
    ]
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "900ms"}, "scrape_configs": scrape}
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / "prometheus.log", "wb"),  # noqa: SIM115
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _query(prometheus: str, expr: str) -> list[dict[str, object]]:
    reply = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert reply["status"] == "success", reply
    return reply["data"]["result"]  # type: ignore[no-any-return]


def test_prometheus_scrapes_every_part_and_finds_the_red_and_event_metrics(stack: Stack, prometheus: str) -> None:
    # Traffic, so the labelled series exist: a success, an error, and an event every consumer handles.
    with httpx.Client(base_url=stack.url, timeout=5) as client:
        token = client.post("/api/v1/auth/login", json={"username": "rm1", "password": "Demo-Passw0rd!"}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        assert (
            client.post("/api/v1/customers", json={"kind": "individual", "name": "普罗"}, headers=headers).status_code
            == 201
        )
        assert client.get("/api/v1/customers/does-not-exist", headers=headers).status_code == 404

    wanted = {
        "up == 1": len(PARTS),
        'crm_grpc_server_requests_total{service="customer"}': 1,
        'crm_grpc_server_requests_total{service="customer",code="NOT_FOUND"}': 1,
        'crm_grpc_server_request_seconds_bucket{service="customer"}': 1,
        "crm_http_requests_total": 1,
        "crm_http_request_seconds_bucket": 1,
        "crm_outbox_backlog": len(SERVICES),
        "crm_outbox_oldest_age_seconds": len(SERVICES),
        'crm_consumer_handled_total{outcome="handled"}': 5,  # interaction, opportunity, ticket, notification, reporting
        "crm_consumer_lag": 5,
    }
    missing: dict[str, int] = {}
    for _ in range(100):
        missing = {expr: n for expr, n in wanted.items() if len(_query(prometheus, expr)) < n}
        if not missing:
            break
        time.sleep(0.2)
    assert not missing, f"series missing (expression → at least how many): {missing}"
    targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    assert sorted(t["labels"]["job"] for t in targets if t["health"] == "up") == sorted(PARTS)
