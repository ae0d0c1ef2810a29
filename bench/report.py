"""Render the figures of one suite run as ``bench/RESULTS.md`` (the whole file is rewritten every run)."""

from __future__ import annotations

import math
from typing import Any

from bench.common import Row, Section

HEADER = """# Benchmark results

Written by `make bench` (`.venv/bin/python -m bench.run`, code in `bench/`); every run overwrites this
whole file. Each figure of ours is shown next to the *bare limit it stands on*, measured in the same run
on the same machine — a bare JetStream publish, a bare `grpc.aio` call, a bare Litestar endpoint, one bare
PostgreSQL connection, bare interpreter imports — and as a ratio to it, so a result can be judged even
when the machine is noisy. Ratio = ours ÷ bare: for a throughput, the share of the bare limit we reach
(1.0 = as fast as bare); for a latency or a time, how many times the bare figure it takes. For the bare
limits themselves the ratio is to the reference figure issue #2 quotes for this machine. Targets are
those of issue #2 (section "Performance"); nothing here is asserted by any test. Everything runs over
loopback only and cleans up after itself (scratch databases `crm_bench_<hex>`, streams `CRM_BENCH_<HEX>`,
temporary stack directories). History: before commit 48277fd the relay published ~4,300 events/s and the
consumer ~170 events/s (wait_stall per message; one transaction per event); see git history of
bench/RESULTS.md.
"""


def _fmt(value: float, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit in {"ms"}:
        text = f"{value:.2f}" if value < 100 else f"{value:,.0f}"
    elif unit in {"s"}:
        text = f"{value:.2f}"
    elif unit in {"MB"}:
        text = f"{value:.1f}"
    else:
        text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def _row(row: Row) -> str:
    met = {True: "✅ met", False: "❌ missed", None: ""}[row.met]
    bare = f"{_fmt(row.bare_value, row.unit)} ({row.bare_label})" if row.bare_label else ""
    ratio = "" if math.isnan(row.ratio) else f"{row.ratio:.2f}"
    note = f" — {row.note}" if row.note else ""
    cells = [row.benchmark, row.figure, _fmt(row.value, row.unit), bare, ratio, row.target, met + note]
    return "| " + " | ".join(cells) + " |"


def render(
    machine: dict[str, Any], sections: list[Section], findings: list[str], total_seconds: float, load_after: str
) -> str:
    """The whole Markdown document."""
    out = [HEADER]
    out.append("## Machine\n")
    out.append(f"- Date: {machine.get('date', '?')}")
    out.append(
        f"- CPU: {machine.get('nproc', '?')} × {machine.get('cpu', '?')}; "
        f"memory {machine.get('memory_gib', 0):.1f} GiB; Linux {machine.get('kernel', '?')}"
    )
    out.append(
        f"- Python {machine.get('python', '?')}; the services, and the relay, consumer and writers standing in for "
        "them here, run on their default event loop (uvloop, `CRM_EVENT_LOOP`); the bare limits on asyncio's own"
    )
    out.append(f"- PostgreSQL {machine.get('postgres', '?')} on `{machine.get('postgres_url', '?')}`")
    out.append(
        f"- NATS server {machine.get('nats', '?')} on `{machine.get('nats_url', '?')}` (JetStream); "
        f"the stack's embedded nats-server {machine.get('embedded_nats', '?')}"
    )
    out.append(
        f"- Load average (1/5/15 min) before the suite: {machine.get('load_before', '?')}; after: {load_after}. "
        "This machine is shared with other work (test suites, image builds) while the suite runs; the ratios "
        "are the figures to compare between runs."
    )
    out.append(f"- The whole suite took {total_seconds:.0f} s.\n")
    out.append("## Summary\n")
    out.append("| Benchmark | Figure | Ours | Bare limit, same run | Ratio | Target | Result |")
    out.append("|---|---|---|---|---|---|---|")
    for section in sections:
        for row in section.rows:
            out.append(_row(row))
        if section.error and not section.rows:
            out.append(f"| {section.title} | — | failed | | | | ❌ see below |")
    out.append("")
    out.append("## Details\n")
    for section in sections:
        out.append(f"### {section.title}\n")
        out.append(f"_{section.seconds:.0f} s._\n")
        for paragraph in section.detail:
            out.append(paragraph + "\n")
        if section.error:
            out.append("**Error:**\n\n```text\n" + section.error.strip() + "\n```\n")
    if findings:
        out.append("## Findings in the platform code\n")
        for finding in findings:
            out.append(finding + "\n")
    return "\n".join(out).rstrip() + "\n"
