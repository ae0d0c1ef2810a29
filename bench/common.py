"""Shared helpers of the benchmarks: progress, statistics, scratch databases and streams, child processes.

Every benchmark talks only to loopback services and removes what it creates: PostgreSQL databases are
named ``crm_bench_<hex>`` and dropped afterwards, JetStream streams ``CRM_BENCH_<HEX>`` (subjects under
``crmbench.<hex>.``) are deleted afterwards.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
NATS_URL = os.environ.get("BENCH_NATS_URL", "nats://127.0.0.1:4222")
PG_SERVER_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")

_STARTED = time.monotonic()


def progress(message: str) -> None:
    """Print a progress line to stderr, stamped with the seconds since the suite started."""
    print(f"[bench {time.monotonic() - _STARTED:6.1f}s] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) of ``values`` by the nearest-rank method; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Count, p50, p95, p99 and max of latencies given in seconds, reported in milliseconds."""
    ms = sorted(s * 1000 for s in seconds)
    return {
        "count": float(len(ms)),
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "max": ms[-1] if ms else math.nan,
    }


@dataclass
class Row:
    """One line of the results: our figure, the bare limit it stands on, their ratio and the target."""

    benchmark: str
    figure: str
    value: float
    unit: str
    bare_label: str = ""
    bare_value: float = math.nan
    ratio: float = math.nan
    target: str = ""
    met: bool | None = None
    note: str = ""


@dataclass
class Section:
    """The outcome of one benchmark: rows for the summary table plus free-form detail (Markdown)."""

    title: str
    rows: list[Row] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0


def unique_token() -> str:
    """A short random hex token for scratch names."""
    return uuid.uuid4().hex[:12]


def pg_dsn(database: str) -> str:
    """A plain ``postgresql://`` URL of ``database`` on the bench PostgreSQL server."""
    return f"{PG_SERVER_URL}/{database}"


@contextlib.asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    """Create a database ``crm_bench_<hex>``, yield its name, and drop it afterwards (even on failure)."""
    import asyncpg

    name = f"crm_bench_{unique_token()}"
    admin = await asyncpg.connect(pg_dsn("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield name
    finally:
        admin = await asyncpg.connect(pg_dsn("postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@dataclass(frozen=True)
class ScratchStream:
    """A uniquely named JetStream stream and the subject root it captures."""

    name: str
    root: str

    def subject(self, suffix: str) -> str:
        """A subject under this stream's root."""
        return f"{self.root}.{suffix}"


@contextlib.asynccontextmanager
async def scratch_stream(url: str = NATS_URL) -> AsyncIterator[ScratchStream]:
    """Create a file-backed stream like the platform's (``Bus.ensure_streams``) and delete it afterwards."""
    from crm_platform.bus import Bus, StreamSpec

    token = unique_token()
    stream = ScratchStream(name=f"CRM_BENCH_{token.upper()}", root=f"crmbench.{token}")
    bus = Bus(url, name="crm-bench-admin")
    await bus.connect(attempts=3)
    try:
        await bus.ensure_streams((StreamSpec(stream.name, (f"{stream.root}.>",)),))
        yield stream
    finally:
        with contextlib.suppress(Exception):
            await bus.js.delete_stream(stream.name)
        await bus.close()


def sample_envelope_bytes(subject: str, index: int = 0) -> tuple[str, bytes]:
    """A realistic serialised envelope (a ``CustomerCreated`` event) and its id."""
    from crm.customer.v1 import customer_pb2, events_pb2
    from crm_platform.outbox import make_envelope

    message = events_pb2.CustomerCreated(
        customer_id=f"cus-{index:08d}",
        kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL,
        owner_id="u-rm1",
        branch_id="br-001",
        team_id="team-01",
        region="north",
    )
    envelope = make_envelope(subject, "bench", message, subject_id=f"cus-{index:08d}", actor="u-rm1")
    return envelope.id, envelope.SerializeToString()


def python_child(module: str, *args: str) -> list[str]:
    """The command line running ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def child_env() -> dict[str, str]:
    """The environment for child processes: ours, with the repository root importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return env


def run_json(command: list[str], timeout: float) -> dict[str, Any]:
    """Run a child that prints one JSON object as its last stdout line; return it (raise on failure)."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=child_env(), check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} exited {done.returncode}: {done.stderr[-2000:]}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"{' '.join(command[2:])} printed nothing: {done.stderr[-2000:]}")
    return dict(json.loads(lines[-1]))


@contextlib.contextmanager
def child_process(command: list[str], ready_line: str, timeout: float = 20.0) -> Iterator[subprocess.Popen[str]]:
    """Start a child, wait for ``ready_line`` on its stdout, yield it, and terminate it afterwards."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=None, text=True, env=child_env())
    try:
        deadline = time.monotonic() + timeout
        assert process.stdout is not None
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command[2]} not ready in {timeout} s")
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"{command[2]} exited with {process.wait()} before it was ready")
            if line.strip() == ready_line:
                break
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def emit_json(result: dict[str, Any]) -> None:
    """Write a child's result as the last line of stdout (read by :func:`run_json`), all of it.

    Written with ``os.write`` until every byte is out: once uvloop's loop has closed (a child's run is over),
    writes to a full pipe return short (seen with uvloop 0.23: 65,536 of 200,000 bytes), and ``print`` on an
    unbuffered stdout (``PYTHONUNBUFFERED``) does not retry, so the parent read a cut JSON line."""
    sys.stdout.flush()
    fd = sys.stdout.fileno()
    rest = memoryview((json.dumps(result) + "\n").encode())
    while rest:
        try:
            rest = rest[os.write(fd, rest) :]
        except BlockingIOError:
            select.select([], [fd], [])


def run_as_services(coro: Any) -> Any:
    """Run a coroutine to completion in a fresh event loop of the kind the services run on by default
    (``CRM_EVENT_LOOP``): for the parts of the suite that stand in for a service (relay, consumer, writers)."""
    from crm_platform.tuning import DEFAULT_EVENT_LOOP, run

    return run(coro, DEFAULT_EVENT_LOOP)
