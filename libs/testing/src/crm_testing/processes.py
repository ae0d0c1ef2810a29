"""Processes seen through ``/proc`` (Linux): what tests and benchmarks check of a service's helpers."""

from __future__ import annotations

import contextlib
from pathlib import Path


def spawned_children(pid: int) -> list[int]:
    """The worker processes ``pid`` started with multiprocessing's "spawn" (e.g. the customer service's import
    helper; not multiprocessing's resource tracker)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in children.read_text().split():
                with contextlib.suppress(OSError):
                    if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                        found.append(int(child))
    return found
