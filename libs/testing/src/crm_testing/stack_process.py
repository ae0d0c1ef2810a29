"""The whole stack (``make run``'s supervisor, :mod:`crm_testing.stack`) as a real process for cross-service tests:
embedded NATS, the six services on SQLite and the gateway with the demo organisation, each part on a free port.

The end-to-end tests (``tests/e2e``) and the hostile-input suite (``tests/hostile``) start it from here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from crm_testing.nats_server import free_port

SERVICES = ("CUSTOMER", "INTERACTION", "OPPORTUNITY", "TICKET", "NOTIFICATION", "REPORTING")


@dataclass
class StackProcess:
    """A started stack: its supervisor process, the gateway's URL, every part's ports and the combined log."""

    process: subprocess.Popen[bytes]
    url: str
    ports: dict[str, int]
    log: Path
    data_dir: Path

    def secret(self, name: str) -> str:
        """A secret the supervisor generated into ``secrets.env`` (e.g. ``CRM_INTERNAL_SECRET``)."""
        for line in (self.data_dir / "secrets.env").read_text().splitlines():
            key, _, value = line.partition("=")
            if key == name:
                return value
        raise KeyError(name)


@contextlib.contextmanager
def stack_process(
    tmp_path: Path, extra_env: Mapping[str, str] | None = None, timeout: float = 90.0
) -> Iterator[StackProcess]:
    """Start the stack under ``tmp_path`` and wait until the gateway is ready; stop it (SIGTERM, so the supervisor
    stops its parts) on the way out."""
    ports = {"gateway": free_port(), "nats": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "GATEWAY_"))}
    data_dir = tmp_path / "var"
    env.update(
        CRM_DATA_DIR=str(data_dir),
        CRM_DEMO="1",
        CRM_GATEWAY_PORT=str(ports["gateway"]),
        CRM_EMBEDDED_NATS_PORT=str(ports["nats"]),
    )
    for name in SERVICES:
        ports[name], ports[f"{name}_metrics"] = free_port(), free_port()
        env[f"CRM_{name}_GRPC_PORT"] = str(ports[name])
        env[f"CRM_{name}_METRICS_PORT"] = str(ports[f"{name}_metrics"])
    env.update(extra_env or {})
    log = tmp_path / "stack.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "crm_testing.stack"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + timeout
        while "CRM gateway ready" not in log.read_text(errors="replace"):
            if process.poll() is not None:
                raise RuntimeError(f"stack exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"stack not ready in time:\n{log.read_text()[-4000:]}")
            time.sleep(0.2)
        yield StackProcess(process, f"http://127.0.0.1:{ports['gateway']}", ports, log, data_dir)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
