"""Bare limit (a): JetStream on 127.0.0.1:4222 with nats-py and nothing of ours in between.

* Publish-with-ack round trip, one at a time: p50/p99 of ``js.publish`` (payload and headers like the
  relay's: a real envelope, ``Nats-Msg-Id`` and ``Crm-Event-Type``).
* Async publish throughput: ``js.publish_async`` with many in flight (nats-py's own cap on pending acks),
  every acknowledgement awaited, same payloads and headers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats

from bench.common import NATS_URL, Row, Section, latency_summary_ms, progress, sample_envelope_bytes, scratch_stream

ROUND_TRIPS = 3000
WARMUP = 200
ASYNC_MESSAGES = 60_000
STALL_MESSAGES = 15_000


async def _async_rate(
    js: Any, subject: str, payloads: list[tuple[str, bytes]], count: int, wait_stall: float | None
) -> float:
    """Publish ``count`` messages with ``publish_async`` back to back, await every ack; return msgs/s."""
    tag = "st" if wait_stall else "as"
    started = time.perf_counter()
    futures = []
    for i in range(count):
        event_id, data = payloads[i % len(payloads)]
        headers = {"Nats-Msg-Id": f"{tag}-{i}-{event_id}", "Crm-Event-Type": subject}
        futures.append(await js.publish_async(subject, data, headers=headers, wait_stall=wait_stall))
    await asyncio.gather(*futures)
    return count / (time.perf_counter() - started)


async def measure(url: str = NATS_URL) -> dict[str, Any]:
    """Measure the round trip and the async throughput on a scratch stream; return the raw figures."""
    async with scratch_stream(url) as stream:
        nc = await nats.connect(url, name="crm-bench-bare")
        try:
            js = nc.jetstream(timeout=5)
            subject = stream.subject("customer.customer.created")
            payloads = [sample_envelope_bytes(subject, i) for i in range(1000)]

            latencies: list[float] = []
            for i in range(WARMUP + ROUND_TRIPS):
                event_id, data = payloads[i % len(payloads)]
                headers = {"Nats-Msg-Id": f"rt-{i}-{event_id}", "Crm-Event-Type": subject}
                started = time.perf_counter()
                await js.publish(subject, data, headers=headers)
                if i >= WARMUP:
                    latencies.append(time.perf_counter() - started)
            round_trip = latency_summary_ms(latencies)
            progress(f"  JetStream publish round trip p50 {round_trip['p50']:.3f} ms, p99 {round_trip['p99']:.3f} ms")

            rate = await _async_rate(js, subject, payloads, ASYNC_MESSAGES, wait_stall=None)
            progress(f"  JetStream async publish {rate:,.0f} msgs/s")
            stalled_rate = await _async_rate(js, subject, payloads, STALL_MESSAGES, wait_stall=5.0)
            progress(f"  JetStream async publish with wait_stall=5.0 {stalled_rate:,.0f} msgs/s")
            server_version = str(nc._server_info.get("version", "?"))
        finally:
            await nc.close()
    return {
        "round_trip_ms": round_trip,
        "async_rate": rate,
        "async_rate_wait_stall": stalled_rate,
        "stall_messages": STALL_MESSAGES,
        "async_messages": ASYNC_MESSAGES,
        "payload_bytes": len(payloads[0][1]),
        "server_version": server_version,
    }


def section(figures: dict[str, Any]) -> Section:
    """The bare-NATS rows (compared with the reference figures of issue #2 where it gives one)."""
    rt = figures["round_trip_ms"]
    rows = [
        Row("Bare JetStream publish RTT", "p50", rt["p50"], "ms"),
        Row(
            "Bare JetStream publish RTT",
            "p99",
            rt["p99"],
            "ms",
            bare_label="issue #2 reference",
            bare_value=0.2,
            ratio=rt["p99"] / 0.2,
        ),
        Row("Bare JetStream async publish", "throughput", figures["async_rate"], "msgs/s"),
        Row(
            "JetStream async publish, `wait_stall=5.0` (as the relay called it before 48277fd)",
            "throughput",
            figures["async_rate_wait_stall"],
            "msgs/s",
            bare_label="bare async publish",
            bare_value=figures["async_rate"],
            ratio=figures["async_rate_wait_stall"] / figures["async_rate"],
            note="why the relay now bounds a batch with one deadline instead",
        ),
    ]
    detail = [
        f"JetStream round trip: {int(rt['count'])} sequential `js.publish` calls after {WARMUP} warm-up, "
        f"{figures['payload_bytes']}-byte envelope, p50 {rt['p50']:.3f} / p95 {rt['p95']:.3f} / "
        f"p99 {rt['p99']:.3f} / max {rt['max']:.3f} ms.",
        f"Async publish: {figures['async_messages']:,} `js.publish_async` back to back (in flight capped by "
        f"nats-py's pending-ack limit of 4,000), then every ack awaited: {figures['async_rate']:,.0f} msgs/s. "
        f"The same with `wait_stall=5.0` ({figures['stall_messages']:,} messages): "
        f"{figures['async_rate_wait_stall']:,.0f} msgs/s.",
    ]
    return Section("Bare JetStream", rows, detail)
