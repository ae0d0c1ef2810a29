"""Bare limit (b): grpc.aio unary calls per second, server and client in separate processes.

The server is a plain ``grpc.aio`` server with only the standard health service (no interceptor); the
client keeps ``CONCURRENCY`` calls of ``grpc.health.v1.Health/Check`` in flight on one channel for
``DURATION`` seconds after a short warm-up. ``python -m bench.bare_grpc serve PORT`` and
``python -m bench.bare_grpc client PORT`` are the two halves.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from typing import Any

from bench.common import Row, Section, child_process, emit_json, progress, python_child, run_json

CONCURRENCY = 48
WARMUP = 1.0
DURATION = 5.0
REFERENCE = 7000.0


async def serve(port: int) -> None:
    """Serve health on 127.0.0.1:``port`` until SIGTERM; print ``ready`` once listening."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(grace=1)


async def client(port: int) -> dict[str, Any]:
    """Keep ``CONCURRENCY`` Check calls in flight; return calls/s over the measured window."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        await stub.Check(request, timeout=5)
        loop = asyncio.get_running_loop()
        start = loop.time()
        measure_from = start + WARMUP
        end = measure_from + DURATION
        counted = 0

        async def worker() -> None:
            nonlocal counted
            while True:
                await stub.Check(request, timeout=5)
                now = loop.time()
                if now >= end:
                    return
                if now >= measure_from:
                    counted += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return {"calls_per_s": counted / DURATION, "calls": counted}


def measure() -> dict[str, Any]:
    """Start the server process, run the client process against it, return the figures."""
    from crm_testing.nats_server import free_port

    port = free_port()
    started = time.perf_counter()
    with child_process(python_child("bench.bare_grpc", "serve", str(port)), "ready"):
        figures = run_json(python_child("bench.bare_grpc", "client", str(port)), timeout=60)
    figures["wall_s"] = time.perf_counter() - started
    progress(f"  grpc.aio unary echo {figures['calls_per_s']:,.0f} calls/s")
    return figures


def section(figures: dict[str, Any]) -> Section:
    """The bare-gRPC row, compared with the reference figure of issue #2."""
    rate = figures["calls_per_s"]
    row = Row(
        "Bare grpc.aio unary echo",
        f"throughput, {CONCURRENCY} in flight",
        rate,
        "calls/s",
        bare_label="issue #2 reference",
        bare_value=REFERENCE,
        ratio=rate / REFERENCE,
    )
    detail = [
        f"gRPC: health `Check` on a bare `grpc.aio` server (separate process), one client process with "
        f"{CONCURRENCY} concurrent calls on one channel, {WARMUP:.0f} s warm-up then {DURATION:.0f} s measured: "
        f"{figures['calls']:,} calls = {rate:,.0f} calls/s."
    ]
    return Section("Bare grpc.aio", [row], detail)


def main(argv: list[str]) -> int:
    """``serve PORT`` or ``client PORT``."""
    if len(argv) != 2 or argv[0] not in {"serve", "client"}:
        print("usage: python -m bench.bare_grpc serve|client PORT", file=sys.stderr)
        return 2
    port = int(argv[1])
    if argv[0] == "serve":
        asyncio.run(serve(port))
    else:
        emit_json(asyncio.run(client(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
