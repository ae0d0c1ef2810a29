"""Transport tricks below what an HTTP client library lets one send: a ``Content-Length`` larger than the body
followed by a hang-up, and a client that leaves mid-body. Neither is a fault of ours: the gateway's metrics must
count them as 499 (client closed request), never as a 500, and must not log them as failed requests."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

from hostile_stack import Hostile

ROUTE = "/api/v1/customers"


def _count(hostile: Hostile, status: str) -> float:
    """The gateway's count of POSTs to ROUTE answered ``status``."""
    labels = ('method="POST"', f'route="{ROUTE}"', f'status="{status}"')
    total = 0.0
    for line in hostile.client.get("/metrics").text.splitlines():
        if line.startswith("crm_http_requests_total{") and all(label in line for label in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _short_body_then_hang_up(hostile: Hostile, token: str) -> None:
    address = urlsplit(hostile.stack.url)
    with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        head = (
            f"POST {ROUTE} HTTP/1.1\r\nHost: {address.netloc}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        sock.sendall(head.encode() + b'{"kind": "individual", "name": ')
        time.sleep(0.3)  # the gateway is now reading a body that will never be complete


def test_a_short_body_and_a_hang_up_are_no_server_error(hostile: Hostile) -> None:
    token = hostile.tokens["rm"]
    errors_before, closed_before = _count(hostile, "500"), _count(hostile, "499")
    for _ in range(3):
        _short_body_then_hang_up(hostile, token)
    deadline = time.monotonic() + 10
    while _count(hostile, "499") < closed_before + 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _count(hostile, "499") == closed_before + 3
    assert _count(hostile, "500") == errors_before
    failed = [entry for entry in _log_entries(hostile) if entry.get("msg") == "request failed"]
    assert not [e for e in failed if e.get("route") == ROUTE and e.get("status") == 500], failed


def _log_entries(hostile: Hostile) -> list[dict[str, object]]:
    entries = []
    for line in hostile.stack.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
    return entries
