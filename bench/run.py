"""Entry point of ``make bench``: run every benchmark in turn and write ``bench/RESULTS.md``.

``python -m bench.run`` runs the whole suite (about 4–6 minutes) and overwrites ``bench/RESULTS.md``.
``--only nats,pg`` runs a subset and prints the Markdown instead (unless ``--output`` is given).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import bare_grpc, bare_http, bare_nats, bare_pg, cold_start, consumer, e2e_latency, machine, relay, report
from bench.common import BENCH_DIR, REPO_ROOT, Section, progress

OUTBOX = "libs/platform/src/crm_platform/outbox.py"
INBOX = "libs/platform/src/crm_platform/inbox.py"
DB = "libs/platform/src/crm_platform/db.py"
NAMES = ("nats", "pg", "grpc", "http", "relay", "consumer", "e2e", "stack")


def _guarded(title: str, measure: Callable[[], Any], render: Callable[[Any], Section]) -> tuple[Any, Section]:
    """Run one benchmark; a failure becomes a section with the error instead of stopping the suite."""
    progress(f"{title} …")
    started = time.perf_counter()
    figures: Any = None
    try:
        figures = measure()
        section = render(figures)
    except Exception as exc:
        progress(f"{title} failed: {exc!r}")
        section = Section(title, error="".join(traceback.format_exception(exc))[-3000:])
    section.seconds = time.perf_counter() - started
    return figures, section


def _embedded_nats_version() -> str:
    import subprocess

    from crm_testing.nats_server import nats_server_binary

    try:
        done = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True, check=False)
        return done.stdout.strip().removeprefix("nats-server: ") or "?"
    except Exception:
        return "?"


def _where(relative: str, needle: str) -> str:
    """``path:line`` of the first line of a platform file containing ``needle`` (files move while we work)."""
    path = REPO_ROOT / relative
    try:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if needle in line:
                return f"`{relative}:{number}`"
    except OSError:
        pass
    return f"`{relative}`"


def _rate(results: list[dict[str, Any]], batch_size: int) -> float | None:
    return next((r["events_per_s"] for r in results if r["batch_size"] == batch_size), None)


def findings(figures: dict[str, Any]) -> list[str]:
    """The platform defects found by this suite, with this run's measurements filled in."""
    nats_figures = figures.get("nats") or {}
    relay_figures = figures.get("relay") or {}
    consumer_figures = figures.get("consumer") or {}
    out: list[str] = []
    if nats_figures or relay_figures:
        bare = nats_figures.get("async_rate", math.nan)
        stalled = nats_figures.get("async_rate_wait_stall", math.nan)
        measured = f"bare `publish_async` {bare:,.0f} msgs/s vs. {stalled:,.0f} msgs/s with `wait_stall=5.0`"
        shipped = _rate(relay_figures.get("platform", []), 1000)
        patched = _rate(relay_figures.get("patched", []), 1000)
        if shipped and patched:
            measured += (
                f"; relay at batch 1000: {shipped:,.0f} events/s as shipped vs. {patched:,.0f} events/s with the "
                f"patched `_publish` (×{patched / shipped:.1f})"
            )
        out.append(
            "**1. Relay throughput: a timer per message in `OutboxRelay._publish`** — "
            f"{_where(OUTBOX, 'wait_stall=5.0')}: "
            "`futures.append(await js.publish_async(row.subject, row.envelope, headers=headers, wait_stall=5.0))`. "
            "nats-py implements `wait_stall` as `asyncio.wait_for(semaphore.acquire(), timeout=wait_stall)`; on "
            "Python 3.11 `wait_for` with a timeout wraps the acquire in a new Task plus a timer, so *every* publish "
            "suspends and goes through a full event-loop iteration (an epoll pass, nats-py's flusher writing one "
            "small frame per syscall) instead of appending to the pending buffer. Without `wait_stall`, an "
            "uncontended acquire returns without suspending. Proposed change: drop `wait_stall` and bound the whole "
            "batch — publishes and acks — with one `async with asyncio.timeout(self._publish_timeout):` around the "
            "loop and the `gather` (batches stay below nats-py's 4,000 pending-ack cap, so the semaphore never "
            "blocks in practice, and a stalled broker still fails the batch after `publish_timeout`). Patched "
            f"copy: `bench/patched.py` (`PatchedOutboxRelay`). Measured in this run: {measured}."
        )
    if consumer_figures:
        shipped_c = consumer_figures["platform"]
        inbox_c = consumer_figures["patched_inbox"]
        ping_c = consumer_figures["patched_inbox_no_pre_ping"]
        out.append(
            "**2. Consumer: two round trips for the inbox where one does** — "
            f"{_where(INBOX, 'seen = await session.execute(')} (`ConsumerRunner._apply`) runs `SELECT` on the "
            "inbox, then `INSERT`, then catches `IntegrityError` for the race between them. With the transaction's "
            "`BEGIN`/`COMMIT` and the pool's ping that is five PostgreSQL round trips per event, handled strictly "
            "one after another, so round trips — not the handler — set the consumer's ceiling. Proposed change: "
            "one `INSERT … ON CONFLICT (consumer, event_id) DO NOTHING` (SQLAlchemy's `postgresql.insert` / "
            "`sqlite.insert` with `on_conflict_do_nothing`; both backends support it) and `rowcount == 0` as the "
            "duplicate — one round trip, no race, no exception path. Patched copy: `bench/patched.py` "
            "(`PatchedConsumerRunner`). Measured in this run (backlog drain): "
            f"{shipped_c['events_per_s']:,.0f} → {inbox_c['events_per_s']:,.0f} events/s, "
            f"{shipped_c['cpu_ms_per_event']:.2f} → {inbox_c['cpu_ms_per_event']:.2f} ms CPU per event."
        )
        out.append(
            "**3. A ping before every transaction** — "
            f"{_where(DB, 'pool_pre_ping=True')} (`create_engine`) sets `pool_pre_ping=True`, so every checkout — "
            "every gRPC request's and every consumed event's transaction — first pings PostgreSQL and waits: one "
            "more round trip and, through SQLAlchemy's greenlet bridge, noticeable CPU. `pool_recycle=1800` is "
            "already set; a connection that died in between fails its statement, SQLAlchemy invalidates the pool, "
            "and the consumer's redelivery (or the caller's retry of an idempotent call) covers it. Proposed "
            "change: `pool_pre_ping=False` (a trade-off for the owners of `db.py` to weigh, not a bug). Measured in "
            f"this run on top of finding 2: {inbox_c['events_per_s']:,.0f} → {ping_c['events_per_s']:,.0f} "
            f"events/s, {inbox_c['cpu_ms_per_event']:.2f} → {ping_c['cpu_ms_per_event']:.2f} ms CPU per event."
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the suite (or ``--only`` a part of it) and write the results."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(NAMES)}")
    parser.add_argument("--output", type=Path, help="where to write the Markdown (default bench/RESULTS.md)")
    args = parser.parse_args(argv)
    selected = set(NAMES) if not args.only else {n.strip() for n in args.only.split(",")}
    unknown = selected - set(NAMES)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    output = args.output or (BENCH_DIR / "RESULTS.md" if not args.only else None)

    logging.basicConfig(level=logging.ERROR)  # the platform's own warnings (e.g. "NATS disconnected" on close)
    suite_started = time.perf_counter()
    progress("machine …")
    info = asyncio.run(machine.describe())
    info["embedded_nats"] = _embedded_nats_version()
    figures: dict[str, Any] = {}
    sections: list[Section] = []

    def bare_rtt_p99() -> float:
        return float((figures.get("nats") or {}).get("round_trip_ms", {}).get("p99", math.nan))

    def bare_async() -> float:
        return float((figures.get("nats") or {}).get("async_rate", math.nan))

    plan: list[tuple[str, str, Callable[[], Any], Callable[[Any], Section]]] = [
        ("nats", "Bare JetStream", lambda: asyncio.run(bare_nats.measure()), bare_nats.section),
        ("pg", "Bare PostgreSQL", lambda: asyncio.run(bare_pg.measure()), bare_pg.section),
        ("grpc", "Bare grpc.aio", bare_grpc.measure, bare_grpc.section),
        ("http", "Bare Litestar", bare_http.measure, bare_http.section),
        (
            "relay",
            "Outbox relay throughput",
            lambda: asyncio.run(relay.measure()),
            lambda f: relay.section(f, bare_async()),
        ),
        ("consumer", "Consumer throughput", lambda: asyncio.run(consumer.measure()), consumer.section),
        (
            "e2e",
            "End-to-end event latency",
            lambda: asyncio.run(e2e_latency.measure_both()),
            lambda f: e2e_latency.section(f, bare_rtt_p99()),
        ),
        ("stack", "Cold start, idle memory and stop of the whole stack", cold_start.measure, cold_start.section),
    ]
    for name, title, measure, render in plan:
        if name not in selected:
            continue
        figures[name], section = _guarded(title, measure, render)
        sections.append(section)

    total = time.perf_counter() - suite_started
    document = report.render(info, sections, findings(figures), total, machine.load_average())
    if output is None:
        print(document)
    else:
        output.write_text(document)
        progress(f"wrote {output} ({total:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
