"""Checks on what the processes log: JSON lines (``crm_platform.logging``), one record per line."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def json_record(line: str) -> dict[str, Any] | None:
    """``line`` as a log record (a JSON object with ts, level, service and msg), or ``None`` if it is not one."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if isinstance(record, dict) and {"ts", "level", "service", "msg"} <= record.keys():
        return record
    return None


def not_json_records(lines: Iterable[str]) -> list[str]:
    """The non-empty lines that are not JSON log records."""
    return [line for line in lines if line.strip() and json_record(line) is None]
