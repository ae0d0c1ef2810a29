"""Fixtures of the deployment checks."""

from __future__ import annotations

from typing import Any

import pytest

from .support import DEPLOY, OVERLAYS, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every overlay's objects, rendered once per test session."""
    return {overlay: render(DEPLOY / "overlays" / overlay) for overlay in OVERLAYS}
