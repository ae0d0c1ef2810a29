"""The hostile-input suite's stack, started once for the whole suite (see ``hostile_stack.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hostile_stack import Hostile, hostile_stack


@pytest.fixture(scope="session")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    with hostile_stack(tmp_path_factory.mktemp("hostile")) as prepared:
        yield prepared
