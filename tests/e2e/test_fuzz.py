"""Schemathesis fuzzes every operation of the gateway's OpenAPI schema, as users of several roles, against
the real stack: no input may produce a 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import Stack

pytestmark = pytest.mark.slow

USERS = ["head", "admin"]  # customer routes as a branch head; admin routes as an admin


@pytest.fixture(scope="module")
def tokens(stack: Stack) -> dict[str, str]:
    """Sign everyone in first: the admin's fuzzing may disable or reset other users."""
    out = {}
    for user in USERS:
        login = httpx.post(
            f"{stack.url}/api/v1/auth/login", json={"username": user, "password": "Demo-Passw0rd!"}, timeout=5
        )
        assert login.status_code == 200, login.text
        out[user] = login.json()["access_token"]
    return out


@pytest.mark.parametrize("user", USERS)
def test_fuzzing_the_openapi_schema_finds_no_server_error(
    stack: Stack, tokens: dict[str, str], user: str, tmp_path: Path
) -> None:
    token = tokens[user]
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{stack.url}/schema/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "12",
            "--seed",
            "20261123",
            "--header",
            f"Authorization: Bearer {token}",
            # Logging out would revoke the token the rest of the run uses; logout has its own tests.
            "--exclude-path",
            "/api/v1/auth/logout",
            "--request-timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
