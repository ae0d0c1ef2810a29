"""Cold start of the whole ``make run`` stack, its idle memory, and its stop time.

Each run starts ``python -m crm_testing.stack`` (what ``make run`` runs) with a fresh ``CRM_DATA_DIR`` in a
temporary directory and free ports for everything (embedded NATS, SQLite files), and measures the wall
time from spawn to the ``CRM gateway ready`` line (the supervisor's own ``all parts healthy in X s`` is
parsed too). After ``IDLE_SECONDS`` idle, the VmRSS of the supervisor and of every descendant process is
read from ``/proc``. Then the supervisor gets SIGTERM and the time until it has exited is the stop time.

The bare limit it stands on, measured in the same run: the *import floor* — the same processes started
at once (nats-server plus one Python interpreter per part that only imports the module the part runs,
and nothing else), wall time until all have finished importing, and the RSS of each such import-only
interpreter.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Row, Section, progress

RUNS = 3
IDLE_SECONDS = 5.0
START_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0
TARGET_START_S = 15.0
TARGET_RSS_MB = 120.0
SERVICE_ENV = ["CUSTOMER", "INTERACTION", "OPPORTUNITY", "TICKET", "NOTIFICATION", "REPORTING"]
READY_LINE = "CRM gateway ready"
HEALTHY = re.compile(r"all parts healthy in ([\d.]+) s")


def _free_port() -> int:
    from crm_testing.nats_server import free_port

    return free_port()


def stack_env(data_dir: Path) -> dict[str, str]:
    """The supervisor's environment: ours without CRM_/GATEWAY_ settings, fresh data dir, free ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "GATEWAY_"))}
    env.update(
        CRM_DATA_DIR=str(data_dir),
        CRM_GATEWAY_PORT=str(_free_port()),
        CRM_EMBEDDED_NATS_PORT=str(_free_port()),
    )
    for name in SERVICE_ENV:
        env[f"CRM_{name}_GRPC_PORT"] = str(_free_port())
        env[f"CRM_{name}_METRICS_PORT"] = str(_free_port())
    return env


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` in the process tree (children, grandchildren, …)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _ppid(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found: list[int] = []
    queue = [root]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def rss_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` in MB (MiB), or None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def process_name(pid: int) -> str:
    """A readable name from the command line: the module after ``-m``, else the executable's name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"pid {pid}"
    args = [a.decode(errors="replace") for a in argv if a]
    if "-m" in args and args.index("-m") + 1 < len(args):
        return args[args.index("-m") + 1]
    if "-c" in args:
        return "python -c (worker)"
    return Path(args[0]).name if args else f"pid {pid}"


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and _ppid(pid) is not None


def _kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def one_run(index: int) -> dict[str, Any]:
    """Start the stack once, measure start, idle RSS and stop; clean everything up."""
    tmp = Path(tempfile.mkdtemp(prefix="crm-bench-stack-"))
    env = stack_env(tmp / "var")
    log_path = tmp / "stack.log"
    result: dict[str, Any] = {"run": index}
    known: list[int] = []
    with open(log_path, "wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "crm_testing.stack"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        ready_at = None
        while time.monotonic() - started < START_TIMEOUT:
            text = log_path.read_text(errors="replace")
            if READY_LINE in text:
                ready_at = time.monotonic()
                break
            if process.poll() is not None:
                break
            known = sorted(set(known) | set(descendants(process.pid)))
            time.sleep(0.05)
        text = log_path.read_text(errors="replace")
        if ready_at is None:
            result["error"] = (
                f"stack not ready (exit code {process.poll()}) after {time.monotonic() - started:.1f} s; "
                f"supervisor lines and tracebacks from its log:\n{_failure_excerpt(text)}"
            )
            return result
        result["ready_s"] = ready_at - started
        healthy = HEALTHY.search(text)
        result["healthy_s"] = float(healthy.group(1)) if healthy else None
        progress(f"  stack run {index}: ready in {result['ready_s']:.2f} s")

        time.sleep(IDLE_SECONDS)
        memory = []
        pids = descendants(process.pid)
        known = sorted(set(known) | set(pids))
        for pid in [process.pid, *pids]:
            rss = rss_mb(pid)
            if rss is not None:
                name = "supervisor (crm_testing.stack)" if pid == process.pid else process_name(pid)
                memory.append({"pid": pid, "name": name, "rss_mb": rss})
        result["memory"] = memory

        stop_started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            result["exit_code"] = process.wait(timeout=STOP_TIMEOUT)
            result["stop_s"] = time.monotonic() - stop_started
        except subprocess.TimeoutExpired:
            result["exit_code"] = None
            result["stop_s"] = None
        final = log_path.read_text(errors="replace")
        result["stopped_cleanly"] = "stopped cleanly" in final
        result["left_behind"] = [pid for pid in known if _alive(pid)]
        progress(f"  stack run {index}: stopped in {result['stop_s'] or float('nan'):.2f} s")
        return result
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        _kill_leftovers(known)
        shutil.rmtree(tmp, ignore_errors=True)


def _failure_excerpt(log: str, limit: int = 40) -> str:
    """The lines that explain a failed start: the supervisor's ``[crm]`` lines, tracebacks, error records."""
    lines = [
        line
        for line in log.splitlines()
        if not line.startswith("{") or '"level": "error"' in line or '"level": "critical"' in line
    ]
    return "\n".join(line[:300] for line in lines[-limit:])


def _part_modules() -> tuple[list[tuple[str, list[str]]], list[str]]:
    """(part name, modules its process imports) for every part that exists, and the missing parts."""
    from crm_testing.stack import SERVICES

    parts: list[tuple[str, list[str]]] = []
    missing: list[str] = []
    for _domain, package in [*SERVICES, ("gateway", "crm_gateway")]:
        try:
            present = importlib.util.find_spec(f"{package}.__main__") is not None
        except ModuleNotFoundError:
            present = False
        if not present:
            missing.append(package)
            continue
        modules = [f"{package}.__main__"] + (["crm_gateway.app"] if package == "crm_gateway" else [])
        parts.append((package, modules))
    return parts, missing


def import_floor() -> dict[str, Any]:
    """Start nats-server and one import-only interpreter per part at once; time it and weigh each one."""
    from crm_testing.nats_server import NatsServer

    parts, missing = _part_modules()
    tmp = Path(tempfile.mkdtemp(prefix="crm-bench-floor-"))
    children: list[tuple[str, subprocess.Popen[str]]] = []
    nats = NatsServer(tmp / "nats")
    started = time.monotonic()
    try:
        for name, modules in parts:
            code = f"import {', '.join(modules)}; print('ok', flush=True); import sys; sys.stdin.read()"
            child = subprocess.Popen(
                [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            children.append((name, child))
        nats.start()
        nats_ready = time.monotonic() - started
        for name, child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ok":
                raise RuntimeError(f"importing {name} failed")
        wall = time.monotonic() - started
        memory = {name: rss_mb(child.pid) or float("nan") for name, child in children}
        nats_rss = rss_mb(nats.process.pid) if nats.process else None
    finally:
        for _name, child in children:
            if child.poll() is None:
                with contextlib.suppress(Exception):
                    child.communicate(input="", timeout=10)
            if child.poll() is None:
                child.kill()
                child.wait()
        nats.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    progress(f"  import floor: {len(parts)} interpreters + nats-server ready in {wall:.2f} s")
    return {"wall_s": wall, "nats_ready_s": nats_ready, "rss_mb": memory, "nats_rss_mb": nats_rss, "missing": missing}


def measure() -> dict[str, Any]:
    """The import floor, then ``RUNS`` cold starts of the stack."""
    floor = import_floor()
    runs = []
    for index in range(1, RUNS + 1):
        run = one_run(index)
        runs.append(run)
        if "error" in run:
            progress(f"  stack run {index} failed; not retrying")
            break
    return {"floor": floor, "runs": runs}


def _floor_rss(name: str, floor: dict[str, Any]) -> float:
    if name.startswith("nats-server"):
        return float(floor["nats_rss_mb"] or float("nan"))
    return float(floor["rss_mb"].get(name, float("nan")))


def section(figures: dict[str, Any]) -> Section:
    """Rows for the start time (median of the runs), the largest RSS and the stop time."""
    floor = figures["floor"]
    runs = [r for r in figures["runs"] if "ready_s" in r]
    failed = [r for r in figures["runs"] if "error" in r]
    out = Section("Cold start, idle memory and stop of the whole stack")
    if floor["missing"]:
        out.detail.append(
            f"Parts missing from the workspace when this ran (not in the import floor): {', '.join(floor['missing'])}."
        )
    if failed:
        out.error = failed[0]["error"]
    if not runs:
        out.rows.append(
            Row(
                "Cold start to all-healthy",
                "median",
                float("nan"),
                "s",
                target=f"≤ {TARGET_START_S:.0f} s",
                met=False,
                note="the stack did not start; see below",
            )
        )
        return out
    ready = [r["ready_s"] for r in runs]
    median = statistics.median(ready)
    out.rows.append(
        Row(
            "Cold start to all-healthy (`make run`)",
            f"median of {len(ready)}",
            median,
            "s",
            bare_label="import floor (all parts' imports + nats-server, at once)",
            bare_value=floor["wall_s"],
            ratio=median / floor["wall_s"],
            target=f"≤ {TARGET_START_S:.0f} s",
            met=median <= TARGET_START_S and not failed,
        )
    )
    last = runs[-1]
    heaviest = max(last["memory"], key=lambda m: m["rss_mb"])
    worst_rss = max(m["rss_mb"] for r in runs for m in r["memory"])
    out.rows.append(
        Row(
            "Idle RSS, largest process",
            heaviest["name"],
            worst_rss,
            "MB",
            bare_label="its import-only RSS",
            bare_value=_floor_rss(heaviest["name"], floor),
            ratio=worst_rss / _floor_rss(heaviest["name"], floor),
            target=f"≤ {TARGET_RSS_MB:.0f} MB each",
            met=worst_rss <= TARGET_RSS_MB,
        )
    )
    stops = [r["stop_s"] for r in runs if r.get("stop_s") is not None]
    if stops:
        out.rows.append(
            Row(
                "Stop on SIGTERM",
                f"median of {len(stops)}",
                statistics.median(stops),
                "s",
                note="all exited 0" if all(r.get("exit_code") == 0 for r in runs) else "unclean exit, see below",
            )
        )
    lines = [
        "| run | spawn → `CRM gateway ready` | supervisor's `all parts healthy in` | stop after SIGTERM | exit |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        healthy = f"{r['healthy_s']:.1f} s" if r.get("healthy_s") is not None else "?"
        stop = f"{r['stop_s']:.2f} s" if r.get("stop_s") is not None else "did not stop"
        leftovers = f", {len(r['left_behind'])} process(es) left behind" if r.get("left_behind") else ""
        lines.append(f"| {r['run']} | {r['ready_s']:.2f} s | {healthy} | {stop}{leftovers} | {r.get('exit_code')} |")
    lines.append(f"| **median** | **{median:.2f} s** | | | |")
    out.detail.append("\n".join(lines))
    names = sorted({m["name"] for r in runs for m in r["memory"]})
    header = "| process | " + " | ".join(f"run {r['run']}" for r in runs) + " | import-only floor | max / floor |"
    table = [header, "|---" * (len(runs) + 3) + "|"]
    for name in names:
        values = []
        for r in runs:
            found = [m["rss_mb"] for m in r["memory"] if m["name"] == name]
            values.append(" + ".join(f"{v:.1f}" for v in found) if found else "—")
        peak = max((m["rss_mb"] for r in runs for m in r["memory"] if m["name"] == name), default=float("nan"))
        base = _floor_rss(name, floor)
        flag = " ⚠" if peak > TARGET_RSS_MB else ""
        table.append(f"| {name}{flag} | " + " | ".join(values) + f" | {base:.1f} | {peak / base:.2f} |")
    out.detail.append(
        f"Idle RSS in MB (VmRSS, {IDLE_SECONDS:.0f} s after ready; target ≤ {TARGET_RSS_MB:.0f} MB each):\n\n"
        + "\n".join(table)
    )
    out.detail.append(
        f"Import floor: nats-server plus {len(floor['rss_mb'])} interpreters importing their part's module, started "
        f"together: all ready in {floor['wall_s']:.2f} s (nats-server alone accepted connections after "
        f"{floor['nats_ready_s']:.2f} s)."
    )
    return out
