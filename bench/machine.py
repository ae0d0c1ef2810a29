"""What the figures were measured on: CPU, memory, load, Python, PostgreSQL and NATS server versions."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path
from typing import Any

from bench.common import NATS_URL, PG_SERVER_URL, pg_dsn


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def load_average() -> str:
    """The 1/5/15-minute load averages, as ``/proc/loadavg`` shows them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


async def describe() -> dict[str, Any]:
    """The machine and the versions of what the benchmarks talk to."""
    import asyncpg
    import nats

    pg_version = "unreachable"
    try:
        conn = await asyncpg.connect(pg_dsn("postgres"))
        try:
            pg_version = str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()
    except Exception as exc:
        pg_version = f"unreachable ({exc!r})"
    nats_version = "unreachable"
    try:
        nc = await nats.connect(NATS_URL, name="crm-bench-probe", connect_timeout=2, max_reconnect_attempts=0)
        nats_version = str(nc._server_info.get("version", "?"))
        await nc.close()
    except Exception as exc:
        nats_version = f"unreachable ({exc!r})"
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "postgres": pg_version,
        "postgres_url": PG_SERVER_URL,
        "nats": nats_version,
        "nats_url": NATS_URL,
        "load_before": load_average(),
    }
