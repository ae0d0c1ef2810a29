"""The stack started as real processes (``make run``'s supervisor), one per test module."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crm_testing.nats_server import free_port

SERVICES = ["CUSTOMER", "INTERACTION", "OPPORTUNITY", "TICKET", "NOTIFICATION", "REPORTING"]


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    url: str
    ports: dict[str, int]
    log: Path


def _stack_env(tmp_path: Path) -> tuple[dict[str, str], dict[str, int]]:
    ports = {"gateway": free_port(), "nats": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "GATEWAY_"))}
    env.update(
        CRM_DATA_DIR=str(tmp_path / "var"),
        CRM_DEMO="1",
        CRM_GATEWAY_PORT=str(ports["gateway"]),
        CRM_EMBEDDED_NATS_PORT=str(ports["nats"]),
    )
    for name in SERVICES:
        ports[name], ports[f"{name}_metrics"] = free_port(), free_port()
        env[f"CRM_{name}_GRPC_PORT"] = str(ports[name])
        env[f"CRM_{name}_METRICS_PORT"] = str(ports[f"{name}_metrics"])
    return env, ports


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as started:
        yield started


@contextlib.contextmanager
def running_stack(tmp_path: Path, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """The stack started under ``tmp_path`` (its log in ``stack.log``), with ``extra_env`` over the defaults (e.g.
    a service's ``<SERVICE>_DATABASE_URL`` to run it on PostgreSQL); stopped when the block ends."""
    env, ports = _stack_env(tmp_path)
    env.update(extra_env or {})
    log = tmp_path / "stack.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "crm_testing.stack"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{ports['gateway']}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"stack exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        if "CRM gateway ready" in log.read_text(errors="replace"):
            break
        time.sleep(0.2)
    else:
        process.kill()
        pytest.fail(f"stack not ready in time:\n{log.read_text()[-4000:]}")
    try:
        yield Stack(process, url, ports, log)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        # SIGTERM lets the supervisor stop its parts; a SIGKILL would leave them running.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
