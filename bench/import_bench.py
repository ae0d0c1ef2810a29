"""Batch import of a 100,000-row CSV through the gateway into the customer service on PostgreSQL.

Issue #4 (section "Performance"): ≥ 10,000 rows/s end to end with validation, encryption, history and events;
memory flat (≤ 200 MB RSS) whatever the file size. Two processes started as in production, each
``python -m <part>`` (see ``bench/gateway.py``): the customer service on a scratch database ``crm_bench_<hex>``
and the gateway with the demo users. ``rm1`` logs in and uploads, as the request body with chunked transfer
encoding, a CSV file written beforehand to a temporary file (never held in memory here either): every row a
valid individual with name, gender, resident ID number, mobile, e-mail and address (four fields encrypted,
two lookup hashes, duplicate checks against the database and the file), so every row becomes a customer with
its data key, a history row and a ``customer.created`` event in the outbox.

Timed: from the first byte of the upload to the job's ``finished`` (polled every 0.2 s) — the upload, the
file check, and every batch. Also reported: when the relay had published the last event (the outbox empty of
unpublished rows), and the peak RSS (``VmHWM``) of both processes after a 10,000-row warm-up import and after
the 100,000-row one: flat memory means the second is no higher than the first by more than noise.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import http.client
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import Row, Section, pg_dsn, progress, scratch_database
from crm_testing.processes import spawned_children

ROWS = int(os.environ.get("BENCH_IMPORT_ROWS", "100000"))
WARM_UP_ROWS = min(10_000, ROWS)
TARGET_ROWS_PER_S = 10_000.0
RAW_COPY_REFERENCE = 480_000.0  # rows/s: issue #4's "raw COPY on this machine"
TARGET_RSS_MB = 200.0
COLUMNS = ["kind", "name", "gender", "id_type", "id_number", "mobile", "email", "address", "tier"]


def _resident_id(index: int) -> str:
    from crm_platform.identifiers import resident_id_check_char

    birth = dt.date(1950, 1, 1) + dt.timedelta(days=index % 18000)
    body = f"110105{birth:%Y%m%d}{index // 18000 % 1000:03d}"
    return body + resident_id_check_char(body)


def write_file(path: Path, count: int, start: int) -> int:
    """A valid CSV of ``count`` customers (UTF-8 with BOM) at ``path``; return its size in bytes."""
    with path.open("w", encoding="utf-8-sig", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(COLUMNS)
        for i in range(start, start + count):
            writer.writerow(
                [
                    "individual",
                    f"客户{i}",
                    "male" if i % 2 else "female",
                    "resident_id",
                    _resident_id(i),
                    f"139{i:08d}",
                    f"c{i}@example.com",
                    f"北京市朝阳区建国路{i}号",
                    "gold" if i % 10 == 0 else "none",
                ]
            )
    return path.stat().st_size


def _chunks(path: Path, size: int = 256 * 1024) -> Iterator[bytes]:
    with path.open("rb") as source:
        while piece := source.read(size):
            yield piece


def _upload(port: int, token: str, path: Path) -> dict[str, Any]:
    """POST the file as a chunked body; return the job."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request(
            "POST",
            f"/api/v1/customers/imports?file_name={path.name}",
            body=_chunks(path),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
            encode_chunked=True,
        )
        reply = conn.getresponse()
        body = reply.read()
    finally:
        conn.close()
    if reply.status != 201:
        raise RuntimeError(f"upload answered {reply.status}: {body[:500]!r}")
    return dict(json.loads(body))


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_row(name: str, figure: str, mb: float, note: str) -> Row:
    return Row(name, figure, mb, "MB", target=f"≤ {TARGET_RSS_MB:.0f} MB", met=mb <= TARGET_RSS_MB, note=note)


def _unpublished(database: str) -> int:
    async def count() -> int:
        import asyncpg

        conn = await asyncpg.connect(pg_dsn(database))
        try:
            return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
        finally:
            await conn.close()

    return asyncio.run(count())


def _import(base: str, port: int, token: str, path: Path, database: str) -> dict[str, Any]:
    from bench.gateway import _request

    started = time.perf_counter()
    job = _upload(port, token, path)
    uploaded = time.perf_counter() - started
    while True:
        status, reply = _request("GET", f"{base}/api/v1/customers/imports/{job['id']}?limit=1", token=token)
        if status != 200:
            raise RuntimeError(f"progress answered {status}: {reply}")
        if reply["job"]["status"] == "finished":
            break
        time.sleep(0.2)
    finished = time.perf_counter() - started
    while _unpublished(database):
        time.sleep(0.2)
        if time.perf_counter() - started > 600:
            raise TimeoutError("events not published in 600 s")
    published = time.perf_counter() - started
    return {"job": reply["job"], "upload_s": uploaded, "finished_s": finished, "published_s": published}


def _raw_copy(database: str, path: Path) -> float:
    """Rows per second of a bare ``COPY … FROM STDIN (FORMAT csv)`` of the file into a table of its columns as
    text, with no index, check or trigger: the floor the issue's "raw COPY" figure names, on this machine now."""

    async def run() -> float:
        import asyncpg

        conn = await asyncpg.connect(pg_dsn(database))
        try:
            columns = ", ".join(f"{name} text" for name in COLUMNS)
            await conn.execute(f"CREATE TABLE bench_raw_copy ({columns})")
            started = time.perf_counter()
            result = await conn.copy_to_table(
                "bench_raw_copy", source=path, columns=COLUMNS, format="csv", header=True, encoding="utf-8"
            )
            elapsed = time.perf_counter() - started
            await conn.execute("DROP TABLE bench_raw_copy")
        finally:
            await conn.close()
        copied = int(result.split()[-1])
        if copied != ROWS:
            raise RuntimeError(f"raw COPY copied {copied} of {ROWS} rows")
        return copied / elapsed

    return asyncio.run(run())


def _measure(database: str) -> dict[str, Any]:
    from bench.gateway import (
        _cpu_seconds,
        _processes_cpu_seconds,
        _request,
        _started,
        _until,
        login,
        stack_env,
    )
    from crm_testing.nats_server import free_port

    grpc_port, metrics_port, http_port = free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    with tempfile.TemporaryDirectory(prefix="crm-bench-import-") as tmp:
        root = Path(tmp)
        warm_up, big = root / "warm-up.csv", root / "customers-100k.csv"
        sizes = {"warm_up": write_file(warm_up, WARM_UP_ROWS, 0), "file": write_file(big, ROWS, WARM_UP_ROWS)}
        customer_env, gateway_env = stack_env(
            root, database, grpc_port=grpc_port, metrics_port=metrics_port, http_port=http_port
        )
        with (
            _started("crm_customer", customer_env, root / "customer.log") as customer,
            _started("crm_gateway", gateway_env, root / "gateway.log") as gateway,
        ):
            processes = [customer, gateway]
            try:
                _until("gateway ready", lambda: _request("GET", f"{base}/readyz")[0] == 200, processes)
                token = login(base, "rm1")
                _until(
                    "customer service serving",
                    lambda: _request("GET", f"{base}/api/v1/customers?limit=1", token=token)[0] == 200,
                    processes,
                )
                first = _import(base, http_port, token, warm_up, database)
                rss_warm = {"customer": _vm_hwm_mb(customer.pid), "gateway": _vm_hwm_mb(gateway.pid)}
                progress(f"  warm-up {WARM_UP_ROWS:,} rows in {first['finished_s']:.1f} s")
                # The customer service's import helper process (CRM_CUSTOMER_IMPORT_HELPER_PROCESS), started by the
                # warm-up, prepares the rows of both imports.
                pids = {"customer": customer.pid, "gateway": gateway.pid}
                helpers = spawned_children(customer.pid)
                if helpers:
                    pids["helper"] = helpers[0]
                cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
                postgres_before, nats_before = _processes_cpu_seconds("postgres"), _processes_cpu_seconds("nats-server")
                second = _import(base, http_port, token, big, database)
                cpu = {name: (_cpu_seconds(pid) - cpu_before[name]) / ROWS * 1e6 for name, pid in pids.items()}
                cpu["postgres"] = (_processes_cpu_seconds("postgres") - postgres_before) / ROWS * 1e6
                cpu["nats"] = (_processes_cpu_seconds("nats-server") - nats_before) / ROWS * 1e6
                progress("  CPU per row (µs): " + ", ".join(f"{name} {value:.0f}" for name, value in cpu.items()))
                rss = {name: _vm_hwm_mb(pid) for name, pid in pids.items()}
            except Exception as exc:
                logs = "\n".join(
                    f"--- {name} log (tail) ---\n" + (root / f"{name}.log").read_text(errors="replace")[-1500:]
                    for name in ("customer", "gateway")
                )
                raise RuntimeError(f"{exc}\n{logs}") from exc
        raw_copy = _raw_copy(database, big)  # the services stopped: the machine as the import had it
    job = second["job"]
    if job["imported"] != ROWS:
        raise RuntimeError(f"imported {job['imported']} of {ROWS}: {job}")
    return {
        "rows": ROWS,
        "file_bytes": sizes["file"],
        "upload_s": second["upload_s"],
        "finished_s": second["finished_s"],
        "published_s": second["published_s"],
        "rows_per_s": ROWS / second["finished_s"],
        "warm_up_rows_per_s": WARM_UP_ROWS / first["finished_s"],
        "rss_after_warm_up_mb": rss_warm,
        "rss_peak_mb": rss,
        "cpu_us_per_row": cpu,
        "raw_copy_rows_per_s": raw_copy,
    }


def measure() -> dict[str, Any]:
    """Start the customer service and the gateway, import a warm-up file and then the 100,000-row file."""

    async def run() -> dict[str, Any]:
        async with scratch_database() as database:
            return await asyncio.to_thread(_measure, database)

    figures = asyncio.run(run())
    progress(
        f"  import {figures['rows_per_s']:,.0f} rows/s ({figures['finished_s']:.1f} s; events out at "
        f"{figures['published_s']:.1f} s); peak RSS customer {figures['rss_peak_mb']['customer']:.0f} MB, "
        f"gateway {figures['rss_peak_mb']['gateway']:.0f} MB"
    )
    return figures


def section(figures: dict[str, Any]) -> Section:
    """Throughput and memory rows of the import."""
    name = "Import `POST /api/v1/customers/imports` (100,000-row CSV, PostgreSQL)"
    rate = figures["rows_per_s"]
    peak = figures["rss_peak_mb"]
    warm = figures["rss_after_warm_up_mb"]
    raw = figures.get("raw_copy_rows_per_s", math.nan)
    rows = [
        Row(
            "Bare PostgreSQL COPY (the same CSV file, a table of text columns, no index)",
            "rows/s",
            raw,
            "rows/s",
            bare_label="issue #4 reference",
            bare_value=RAW_COPY_REFERENCE,
            ratio=raw / RAW_COPY_REFERENCE,
        ),
        Row(
            name,
            "rows/s, upload to job finished",
            rate,
            "rows/s",
            bare_label="bare COPY of the same file",
            bare_value=raw,
            ratio=rate / raw,
            target=f"≥ {TARGET_ROWS_PER_S:,.0f} rows/s",
            met=rate >= TARGET_ROWS_PER_S,
        ),
        Row(
            name,
            "all events published",
            figures["published_s"],
            "s",
            note="each batch's events handed to the relay as it commits",
        ),
        *(
            _rss_row(name, f"peak RSS, {label}", peak[part], note)
            for part, label, note in (
                ("customer", "customer service", f"{warm['customer']:.0f} MB after the {WARM_UP_ROWS:,}-row warm-up"),
                ("helper", "customer service's import helper", "the process validating and encrypting the rows"),
                ("gateway", "gateway", f"{warm['gateway']:.0f} MB after the warm-up"),
            )
            if part in peak
        ),
    ]
    detail = [
        f"{figures['rows']:,} valid individuals ({figures['file_bytes'] / 1e6:.1f} MB of CSV) uploaded by rm1 through "
        f"the gateway as a chunked request body: the upload and whole-file check took {figures['upload_s']:.1f} s, "
        f"the job finished at {figures['finished_s']:.1f} s, the relay had published the last `customer.created` "
        f"at {figures['published_s']:.1f} s. Each row: validation (the single-create rules), a data key, four "
        "fields encrypted, two lookup hashes, duplicate checks (database and file), a history row and an event; "
        "batches of 1,000 rows per transaction written with COPY. Peak RSS is `VmHWM` of each process. "
        f"Warm-up ({WARM_UP_ROWS:,} rows): {figures['warm_up_rows_per_s']:,.0f} rows/s. The bare COPY, after the "
        f"services stopped: the same file into a table of its nine columns as text, without index, check or "
        f"trigger, {raw:,.0f} rows/s (issue #4 quotes about {RAW_COPY_REFERENCE:,.0f} for this machine). "
        "CPU per row of the main import"
        f" (utime + stime from the upload's start until every event was published): customer service"
        f" {figures['cpu_us_per_row']['customer']:,.0f} µs"
        + (
            f", its import helper process {figures['cpu_us_per_row']['helper']:,.0f} µs"
            if "helper" in figures["cpu_us_per_row"]
            else " (no helper process)"
        )
        + f", gateway {figures['cpu_us_per_row']['gateway']:,.0f} µs"
        + (
            f", PostgreSQL {figures['cpu_us_per_row']['postgres']:,.0f} µs (every server process of the machine's "
            f"PostgreSQL: backends, WAL writer, checkpointer), NATS server {figures['cpu_us_per_row']['nats']:,.0f} µs"
            " (storing each `customer.created` in JetStream)"
            if "nats" in figures["cpu_us_per_row"]
            else ""
        )
        + ". The helper (`crm_customer.store.import_prepare`) validates, hashes and encrypts the rows of the next "
        "batches (two handed to it ahead) and builds their rows, ready to write, while the service's process decides "
        "one and writes the one before; the writes stay one batch at a time, in file order. Both processes collect "
        "garbage every 50,000 allocations while the job runs (`crm_platform.heap`)."
    ]
    return Section("Batch import", rows=rows, detail=detail)
