"""The stack started as real processes (``make run``'s supervisor, :mod:`crm_testing.stack_process`), one per
test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crm_testing.stack_process import SERVICES, StackProcess
from crm_testing.stack_process import stack_process as running_stack

Stack = StackProcess

__all__ = ["SERVICES", "Stack", "running_stack"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as started:
        yield started
