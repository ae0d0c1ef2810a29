"""Spreadsheet bombs against the customer service (issue 29): how fast each is refused, and what other users'
reads see meanwhile.

The customer service runs as in production (``python -m crm_customer``, on a scratch PostgreSQL database). Four
readers call ``GetCustomer`` on one customer back to back over gRPC, first alone for :data:`PHASE_SECONDS` (the
bare figure of the same run), then as long again in each of three phases: one uploader submits, back to back,
files of the bombs' sizes that are not spreadsheets at all (random bytes: what any refused upload costs the
service — storing the chunks, reading them back, a first look); it submits the issue's bombs in turn, back to
back; it submits the heaviest of them (the row bomb without a dimension) at the pace the gateway allows one user
(:data:`GATEWAY_UPLOADS_PER_MINUTE`). The bombs are built in memory with ``zipfile`` (``crm_testing.xlsx_bombs``):
an XLSX of ~320 KB declaring and holding
1,000,001 rows (with its ``<dimension>`` and without), and one of ~200 KB holding 200 MB of whitespace in a
shared string or an inline string. Timed per bomb: from the first byte of the upload to the ``INVALID_ARGUMENT``.
Also reported: the service's peak RSS (``VmHWM``) before and after the bombs — none may grow it by hundreds of
MB (issue 29 saw ~400 MB for the whitespace bomb and 38 s for the row bomb, with reads of others failing).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.common import Row, Section, latency_summary_ms, progress, scratch_database

PHASE_SECONDS = float(os.environ.get("BENCH_BOMB_SECONDS", "12"))
READERS = 4
TARGET_REFUSAL_S = 1.0
# The p99 of reads under bombs, against their p99 under the same flood of uploads of junk (the bombs' own cost).
TARGET_P99_RATIO = 1.5


def _gateway_uploads_per_minute() -> int:
    """What the gateway lets one user upload (CRM_GATEWAY_UPLOAD_RATE_PER_MINUTE's default): the paced rate."""
    from crm_gateway.config import Settings

    return int(next(f.default for f in dataclasses.fields(Settings) if f.name == "upload_rate_per_minute"))


GATEWAY_UPLOADS_PER_MINUTE = _gateway_uploads_per_minute()
TARGET_PACED_RATIO = 1.5  # the p99 of reads under paced row bombs, against the bare p99
TARGET_GROWTH_MB = 100.0
_CHUNK = 256 * 1024
_PERMISSIONS = ("customer:read", "customer:write", "customer:create", "customer:import")


def _bombs() -> dict[str, bytes]:
    from crm_testing import xlsx_bombs

    return {
        "rows, declared (1,000,001)": xlsx_bombs.many_rows(1_000_001, declared=True),
        "rows, undeclared (1,000,001)": xlsx_bombs.many_rows(1_000_001, declared=False),
        "whitespace, shared string (200 MB)": xlsx_bombs.whitespace_string(200, "shared"),
        "whitespace, inline string (200 MB)": xlsx_bombs.whitespace_string(200, "inline"),
    }


def _vm_kb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return float(line.split()[1])
    return math.nan


async def _drive(port: int, secret: str, bombs: dict[str, bytes], pid: int) -> dict[str, Any]:
    import grpc

    from crm.customer.v1 import customer_pb2, customer_service_pb2, customer_service_pb2_grpc, import_service_pb2_grpc
    from crm.customer.v1 import import_service_pb2 as ipb
    from crm_platform.grpc_client import call_metadata
    from crm_testing.services import identity

    caller = identity("rm1", permissions=_PERMISSIONS)

    def md() -> list[tuple[str, str]]:  # signed anew for every call: the service refuses a replayed identity
        return call_metadata(caller, secret)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        customers = customer_service_pb2_grpc.CustomerServiceStub(channel)
        imports = import_service_pb2_grpc.CustomerImportServiceStub(channel)
        deadline = time.monotonic() + 60
        while True:
            try:
                created = await customers.CreateCustomer(
                    customer_service_pb2.CreateCustomerRequest(
                        kind=customer_pb2.CUSTOMER_KIND_INDIVIDUAL, name="李明", request_id="bench-bomb"
                    ),
                    metadata=md(),
                    timeout=5,
                )
                break
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
        request = customer_service_pb2.GetCustomerRequest(customer_id=created.customer.id)
        for _ in range(200):  # warm-up
            await customers.GetCustomer(request, metadata=md(), timeout=5)

        async def read_for(seconds: float, latencies: list[float], failures: list[str]) -> None:
            end = time.perf_counter() + seconds
            while (started := time.perf_counter()) < end:
                try:
                    await customers.GetCustomer(request, metadata=md(), timeout=5)
                    latencies.append(time.perf_counter() - started)
                except grpc.aio.AioRpcError as exc:
                    failures.append(exc.code().name)

        async def phase(files: dict[str, bytes], pace: float = 0.0) -> dict[str, Any]:
            latencies: list[float] = []
            failures: list[str] = []
            refusals: dict[str, list[float]] = {name: [] for name in files}
            answers: dict[str, str] = {}
            readers = [asyncio.create_task(read_for(PHASE_SECONDS, latencies, failures)) for _ in range(READERS)]
            if files:
                end = time.perf_counter() + PHASE_SECONDS - 1
                while time.perf_counter() < end:
                    for name, content in files.items():
                        seconds, answer = await _submit(imports, ipb, md(), content)
                        refusals[name].append(seconds)
                        answers[name] = answer
                        await asyncio.sleep(max(0.0, pace - seconds))  # paced: one upload started every `pace` s
            await asyncio.gather(*readers)
            return {
                "reads": latency_summary_ms(latencies),
                "reads_per_s": len(latencies) / PHASE_SECONDS,
                "failures": len(failures),
                "refusals": refusals,
                "answers": answers,
            }

        hwm_before = _vm_kb(pid, "VmHWM") / 1024
        bare = await phase({})
        progress(f"  bare reads p99 {bare['reads']['p99']:.2f} ms, {bare['reads_per_s']:,.0f}/s")
        junk = await phase({f"junk {name}": os.urandom(len(content)) for name, content in bombs.items()})
        progress(f"  under junk uploads p99 {junk['reads']['p99']:.2f} ms, {junk['reads_per_s']:,.0f}/s")
        bombed = await phase(bombs)
        worst = {name: content for name, content in bombs.items() if name.startswith("rows, undeclared")}
        paced = await phase(worst, pace=60 / GATEWAY_UPLOADS_PER_MINUTE)
        progress(f"  under paced row bombs p99 {paced['reads']['p99']:.2f} ms, {paced['reads_per_s']:,.0f}/s")
        hwm_after = _vm_kb(pid, "VmHWM") / 1024
        progress(
            f"  under bombs p99 {bombed['reads']['p99']:.2f} ms, {bombed['reads_per_s']:,.0f}/s, "
            f"{bombed['failures']} failed; VmHWM {hwm_before:.0f} → {hwm_after:.0f} MB"
        )
        for name, times in bombed["refusals"].items():
            if times:
                progress(f"  {name}: refused in median {statistics.median(times) * 1000:.0f} ms ({len(times)} runs)")
        return {
            "bare": bare,
            "junk": junk,
            "bombed": bombed,
            "paced": paced,
            "hwm_before_mb": hwm_before,
            "hwm_after_mb": hwm_after,
        }


async def _submit(imports: Any, ipb: Any, md: list[tuple[str, str]], content: bytes) -> tuple[float, str]:
    """Upload one file; (seconds to the answer, the answer: the refusal's status and text)."""
    import grpc

    async def messages() -> AsyncIterator[Any]:
        options = ipb.ImportOptions(format=ipb.IMPORT_FORMAT_XLSX, file_name="bomb.xlsx", dry_run=True)
        yield ipb.UploadImportRequest(options=options)
        for start in range(0, len(content), _CHUNK):
            yield ipb.UploadImportRequest(chunk=content[start : start + _CHUNK])

    started = time.perf_counter()
    try:
        await imports.UploadImport(messages(), metadata=md, timeout=120)
        answer = "ACCEPTED"
    except grpc.aio.AioRpcError as exc:
        answer = f"{exc.code().name}: {(exc.details() or '')[:160]}"
    return time.perf_counter() - started, answer


def _measure(database: str) -> dict[str, Any]:
    from bench.gateway import _started, stack_env
    from crm_testing.nats_server import free_port

    progress("  building the bombs …")
    bombs = _bombs()
    sizes = {name: len(content) for name, content in bombs.items()}
    grpc_port, metrics_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="crm-bench-bomb-") as tmp:
        root = Path(tmp)
        customer_env, _ = stack_env(root, database, grpc_port=grpc_port, metrics_port=metrics_port, http_port=0)
        with _started("crm_customer", customer_env, root / "customer.log") as customer:
            figures = asyncio.run(_drive(grpc_port, customer_env["CRM_INTERNAL_SECRET"], bombs, customer.pid))
    figures["sizes"] = sizes
    return figures


def measure() -> dict[str, Any]:
    """Start the customer service on a scratch database and run both phases."""

    async def run() -> dict[str, Any]:
        async with scratch_database() as database:
            return await asyncio.to_thread(_measure, database)

    return asyncio.run(run())


def section(figures: dict[str, Any]) -> Section:
    """Rows: each bomb's refusal time, reads' p99 under bombs against the bare p99, the memory growth."""
    out = Section("Spreadsheet bombs against the customer service")
    bombed, bare = figures["bombed"], figures["bare"]
    for name, times in bombed["refusals"].items():
        if not times:
            continue
        median = statistics.median(times)
        answer = bombed["answers"].get(name, "")
        refused = answer.startswith("INVALID_ARGUMENT")
        out.rows.append(
            Row(
                "import bombs",
                f"refuse {name}, {figures['sizes'][name] / 1024:,.0f} KB",
                median * 1000,
                "ms",
                target=f"< {TARGET_REFUSAL_S * 1000:.0f} ms, INVALID_ARGUMENT",
                met=refused and median < TARGET_REFUSAL_S,
                note=f"median of {len(times)}, max {max(times) * 1000:.0f} ms",
            )
        )
    junk = figures["junk"]
    paced = figures["paced"]
    p99, junk_p99, bare_p99 = bombed["reads"]["p99"], junk["reads"]["p99"], bare["reads"]["p99"]

    def reads_row(figure: str, phase: dict[str, Any], against: float, against_label: str, **more: Any) -> Row:
        ours = phase["reads"]["p99"]
        uploads = sum(len(times) for times in phase["refusals"].values())
        return Row(
            "import bombs",
            f"GetCustomer p99 while {figure} ({READERS} readers)",
            ours,
            "ms",
            bare_label=against_label,
            bare_value=against,
            ratio=ours / against if against else math.nan,
            note=f"{phase['failures']} failed; {phase['reads_per_s']:,.0f} vs {bare['reads_per_s']:,.0f} reads/s "
            f"bare; {ours / bare_p99:.2f}× the bare {bare_p99:.2f} ms; {uploads} uploads",
            **more,
        )

    out.rows += [
        reads_row("junk files of the bombs' sizes are uploaded", junk, bare_p99, "same reads without uploads"),
        reads_row(
            "bombs are uploaded",
            bombed,
            junk_p99,
            "same reads while junk is uploaded",
            target=f"≤ {TARGET_P99_RATIO:.1f}× under junk uploads, no failure",
            met=p99 <= TARGET_P99_RATIO * junk_p99 and bombed["failures"] == 0,
        ),
        reads_row(
            f"row bombs come at the gateway's limit ({GATEWAY_UPLOADS_PER_MINUTE} a minute)",
            paced,
            bare_p99,
            "same reads without uploads",
            target=f"≤ {TARGET_PACED_RATIO:.1f}× bare, no failure",
            met=paced["reads"]["p99"] <= TARGET_PACED_RATIO * bare_p99 and paced["failures"] == 0,
        ),
    ]
    growth = figures["hwm_after_mb"] - figures["hwm_before_mb"]
    out.rows.append(
        Row(
            "import bombs",
            "customer service peak RSS growth over all bombs",
            growth,
            "MB",
            target=f"≤ {TARGET_GROWTH_MB:.0f} MB",
            met=growth <= TARGET_GROWTH_MB,
            note=f"VmHWM {figures['hwm_before_mb']:.0f} → {figures['hwm_after_mb']:.0f} MB",
        )
    )
    out.detail.append(
        "Each bomb is answered with its refusal: "
        + "; ".join(f"{name} → `{answer}`" for name, answer in bombed["answers"].items())
        + ". The junk files (random bytes) → "
        + "; ".join(sorted({f"`{answer}`" for answer in junk["answers"].values()}))
        + ". The uploader waits for each answer before the next upload: the junk phase submits more uploads in the"
        " same time, each cheaper. Every XLSX is inspected in the service's import helper process"
        " (`crm_customer.store.import_prepare.ImportHelper`), not on the service's interpreter lock."
    )
    return out
