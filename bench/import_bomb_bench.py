"""Spreadsheet bombs against the customer service (issue 29): how fast each is refused, and what other users'
reads see meanwhile.

The customer service runs as in production (``python -m crm_customer``, on a scratch PostgreSQL database). Four
readers call ``GetCustomer`` on one customer back to back over gRPC (the service's core saturated) for
:data:`PHASE_SECONDS` in each phase. One uploader submits, back to back, files of the bombs' sizes that are not
spreadsheets at all (random bytes: what any refused upload costs the service — storing the chunks, reading them
back, a first look); then the issue's bombs in turn, back to back. Then three kinds of slot alternate
(:data:`PACED_ROUNDS` rounds, so that a drift of the machine's speed falls on all alike): bare reads; reads while the
heaviest bomb (the row bomb without a dimension) is uploaded at the pace the gateway allows one user
(:data:`GATEWAY_UPLOADS_PER_MINUTE`); reads while a process apart from the service runs the same check of the same
file at the same pace — the share of the machine that work takes wherever it runs, the floor for the paced figure
on two cores where the readers take one. The bombs are built in memory with ``zipfile`` (``crm_testing.xlsx_bombs``):
an XLSX of ~520 KB declaring and holding 1,000,001 rows (with its ``<dimension>`` and without; 138 MB of XML), and
one of ~200 KB holding 200 MB of whitespace in a shared string or an inline string. Timed per bomb: from the first
byte of the upload to the ``INVALID_ARGUMENT``. The CPU time of the service, its helper and PostgreSQL is taken per
slot. Also reported: the service's peak RSS (``VmHWM``) before and after the bombs — none may grow it by hundreds of
MB (issue 29 saw ~400 MB for the whitespace bomb and 38 s for the row bomb, with reads of others failing).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import statistics
import sys
import tempfile
import time
from asyncio.subprocess import PIPE
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
# The p99 of reads under paced row bombs, against their p99 beside the same check run outside the service: what the
# service adds to the share of the machine the work takes (on two cores where the readers take one, that share
# alone was 1.4-1.7x the bare p99 in runs of 2026-12-07).
TARGET_PACED_RATIO = 1.25
PACED_ROUNDS = 3  # bare and paced slots alternate, PHASE_SECONDS of each in all
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


def _cpu_seconds(service: int) -> dict[str, float]:
    """CPU seconds used so far by the customer service, its import helper and every PostgreSQL process (by command
    name: the service's process is ``python``, its helper a ``python`` child of it)."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {"service": 0.0, "helper": 0.0, "postgres": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        pid, parent, cpu = int(entry.name), int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
        if pid == service:
            used["service"] += cpu
        elif parent == service and name.startswith("python"):
            used["helper"] += cpu
        elif name.startswith("postgres"):
            used["postgres"] += cpu
    return used


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

        async def phase(files: dict[str, bytes], pace: float = 0.0, seconds: float = PHASE_SECONDS) -> dict[str, Any]:
            cpu_before = _cpu_seconds(pid)
            latencies: list[float] = []
            failures: list[str] = []
            refusals: dict[str, list[float]] = {name: [] for name in files}
            answers: dict[str, str] = {}
            readers = [asyncio.create_task(read_for(seconds, latencies, failures)) for _ in range(READERS)]
            if files:
                end = time.perf_counter() + _upload_window(seconds, pace)
                while time.perf_counter() < end:
                    for name, content in files.items():
                        taken, answer = await _submit(imports, ipb, md(), content)
                        refusals[name].append(taken)
                        answers[name] = answer
                        await asyncio.sleep(max(0.0, pace - taken))  # paced: one upload started every `pace` s
            await asyncio.gather(*readers)
            cpu = {part: used - cpu_before[part] for part, used in _cpu_seconds(pid).items()}
            return {
                "latencies": latencies,
                "seconds": seconds,
                "failures": failures,
                "refusals": refusals,
                "answers": answers,
                "cpu": cpu,
            }

        def summary(*slots: dict[str, Any]) -> dict[str, Any]:
            """The slots' reads pooled (one phase, or the alternating slots of one kind)."""
            latencies = [value for slot in slots for value in slot["latencies"]]
            refusals: dict[str, list[float]] = {}
            for slot in slots:
                for name, times in slot["refusals"].items():
                    refusals.setdefault(name, []).extend(times)
            return {
                "reads": latency_summary_ms(latencies),
                "reads_per_s": len(latencies) / sum(slot["seconds"] for slot in slots),
                "failures": sum(len(slot["failures"]) for slot in slots),
                "refusals": refusals,
                "answers": {name: answer for slot in slots for name, answer in slot["answers"].items()},
                "cpu": {part: sum(slot["cpu"][part] for slot in slots) for part in slots[0]["cpu"]},
            }

        hwm_before = _vm_kb(pid, "VmHWM") / 1024
        junk = summary(await phase({f"junk {name}": os.urandom(len(content)) for name, content in bombs.items()}))
        progress(f"  under junk uploads p99 {junk['reads']['p99']:.2f} ms, {junk['reads_per_s']:,.0f}/s")
        bombed = summary(await phase(bombs))
        # The paced bombs against bare reads in alternating slots: a drift of the machine's speed (or the service
        # still warming up) falls on both alike.
        worst = {name: content for name, content in bombs.items() if name.startswith("rows, undeclared")}
        pace = 60 / GATEWAY_UPLOADS_PER_MINUTE
        slot = PHASE_SECONDS / PACED_ROUNDS
        bare_slots, paced_slots, outside_slots = [], [], []
        with tempfile.NamedTemporaryFile(prefix="crm-bench-bomb-", suffix=".xlsx") as bomb_file:
            bomb_file.write(next(iter(worst.values())))
            bomb_file.flush()
            for _ in range(PACED_ROUNDS):
                bare_slots.append(await phase({}, seconds=slot))
                paced_slots.append(await phase(worst, pace=pace, seconds=slot))
                checker = await _check_outside(bomb_file.name, pace, _upload_window(slot, pace))
                outside_slots.append(await phase({}, seconds=slot))
                await checker.wait()
        bare, paced, outside = summary(*bare_slots), summary(*paced_slots), summary(*outside_slots)
        progress(f"  bare reads p99 {bare['reads']['p99']:.2f} ms, {bare['reads_per_s']:,.0f}/s")
        progress(f"  under paced row bombs p99 {paced['reads']['p99']:.2f} ms, {paced['reads_per_s']:,.0f}/s")
        progress(f"  beside the same check outside the service p99 {outside['reads']['p99']:.2f} ms")
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
            "outside": outside,
            "hwm_before_mb": hwm_before,
            "hwm_after_mb": hwm_after,
        }


def _upload_window(seconds: float, pace: float) -> float:
    """How long into a phase of ``seconds`` uploads start (the last answered before the readers stop)."""
    return seconds - min(1.0, pace)


def _check_at_pace(path: str, pace: float, seconds: float) -> None:
    """The checker's side of :func:`_check_outside`: ready once imported, then the check every ``pace`` s."""
    from crm_customer.domain.import_bounds import ImportFileRejected, ImportLimits
    from crm_customer.domain.imports import inspect_xlsx_file

    print("ready", flush=True)
    sys.stdin.readline()
    end = time.monotonic() + seconds
    while (started := time.monotonic()) < end:
        with contextlib.suppress(ImportFileRejected):
            inspect_xlsx_file(path, ImportLimits())
        time.sleep(max(0.0, pace - (time.monotonic() - started)))


async def _check_outside(path: str, pace: float, seconds: float) -> asyncio.subprocess.Process:
    """A process apart from the service that runs the service's check of the file at ``path`` every ``pace`` s
    for ``seconds`` from when it is returned: the same CPU work at the same pace on the same machine, touching
    nothing of the service."""
    from bench.common import child_env

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.import_bomb_bench",
        path,
        str(pace),
        str(seconds),
        env=child_env(),
        stdin=PIPE,
        stdout=PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    await process.stdout.readline()  # its imports done: their CPU time falls outside the slot
    process.stdin.write(b"go\n")
    await process.stdin.drain()
    return process


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


def _per_upload_ms(phase: dict[str, Any], part: str) -> str:
    uploads = sum(len(times) for times in phase["refusals"].values())
    return f"{phase['cpu'][part] * 1000 / uploads:,.0f}" if uploads else "–"


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
    junk, paced, outside = figures["junk"], figures["paced"], figures["outside"]
    outside_p99 = outside["reads"]["p99"]
    p99, junk_p99, bare_p99 = bombed["reads"]["p99"], junk["reads"]["p99"], bare["reads"]["p99"]

    def reads_row(
        figure: str, phase: dict[str, Any], against: float, against_label: str, more_note: str = "", **more: Any
    ) -> Row:
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
            f"bare; {ours / bare_p99:.2f}× the bare {bare_p99:.2f} ms; {uploads} uploads" + more_note,
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
            "the same check runs outside the service at the gateway's pace (the machine's share)",
            outside,
            bare_p99,
            "same reads without uploads",
        ),
        reads_row(
            f"row bombs come at the gateway's limit ({GATEWAY_UPLOADS_PER_MINUTE} a minute)",
            paced,
            outside_p99,
            "same reads beside the same check outside the service",
            target=f"≤ {TARGET_PACED_RATIO:.2f}× the machine's share, no failure",
            met=paced["reads"]["p99"] <= TARGET_PACED_RATIO * outside_p99 and paced["failures"] == 0,
            more_note=f"; helper CPU {_per_upload_ms(paced, 'helper')} ms per bomb",
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
    cpu = "; ".join(
        f"{kind}: " + ", ".join(f"{part} {used:.2f} s" for part, used in figures[kind]["cpu"].items())
        for kind in ("bare", "paced", "outside")
    )
    out.detail.append(f"CPU time over the alternating slots of each kind ({PHASE_SECONDS:.0f} s each in all): {cpu}.")
    return out


if __name__ == "__main__":  # the checker process of _check_outside
    _check_at_pace(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))
