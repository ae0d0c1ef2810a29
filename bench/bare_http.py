"""Bare limit (c): a Litestar JSON endpoint under uvicorn (separate process), loaded by ``wrk``.

``wrk -t2 -c32 -d10s`` against ``GET /json`` returning a small dict; uvicorn with one worker, access log
off, its default loop and HTTP implementation (uvloop and httptools when installed, as the gateway runs).
``python -m bench.bare_http serve PORT`` is the server half.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from typing import Any

from bench.common import Row, Section, child_process, progress, python_child

WRK_ARGS = ["-t2", "-c32", "-d10s"]
REFERENCE_LOW, REFERENCE_HIGH = 20_000.0, 45_000.0


def create_app() -> Any:
    """The bare Litestar application: one JSON endpoint, nothing else."""
    from litestar import Litestar, get

    @get("/json", sync_to_thread=False)
    def json_endpoint() -> dict[str, str]:
        return {"status": "ok", "service": "bench"}

    return Litestar(route_handlers=[json_endpoint], openapi_config=None)


def serve(port: int) -> None:
    """Serve the bare application on 127.0.0.1:``port`` (prints ``ready`` once listening)."""
    import uvicorn

    class _Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            print("ready", flush=True)

    config = uvicorn.Config(
        "bench.bare_http:create_app", factory=True, host="127.0.0.1", port=port, log_level="warning", access_log=False
    )
    _Server(config).run()


def _wait_http(url: str, timeout: float = 15.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer")


def measure() -> dict[str, Any]:
    """Run wrk against the bare server; return requests/s and wrk's latency line."""
    from crm_testing.nats_server import free_port

    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    port = free_port()
    url = f"http://127.0.0.1:{port}/json"
    with child_process(python_child("bench.bare_http", "serve", str(port)), "ready"):
        _wait_http(url)
        subprocess.run([wrk, "-t1", "-c8", "-d1s", url], capture_output=True, check=True)  # warm-up
        done = subprocess.run([wrk, *WRK_ARGS, "--latency", url], capture_output=True, text=True, check=True)
    match = re.search(r"Requests/sec:\s*([\d.]+)", done.stdout)
    if match is None:
        raise RuntimeError(f"could not parse wrk output:\n{done.stdout}")
    latency = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", done.stdout, re.MULTILINE)
    p99 = re.search(r"^\s*99%\s+(\S+)", done.stdout, re.MULTILINE)
    errors = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", done.stdout)
    figures = {
        "requests_per_s": float(match.group(1)),
        "latency_avg": latency.group(1) if latency else "?",
        "latency_p99": p99.group(1) if p99 else "?",
        "non_2xx": int(errors.group(1)) if errors else 0,
        "wrk_version": _wrk_version(wrk),
    }
    progress(f"  Litestar JSON {figures['requests_per_s']:,.0f} req/s (wrk {' '.join(WRK_ARGS)})")
    return figures


def _wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0] if first else "?"


def section(figures: dict[str, Any]) -> Section:
    """The bare-HTTP row, compared with the low end of issue #2's reference range."""
    rate = figures["requests_per_s"]
    row = Row(
        "Bare Litestar JSON endpoint",
        "throughput, wrk " + " ".join(WRK_ARGS),
        rate,
        "req/s",
        bare_label="issue #2 reference (low end)",
        bare_value=REFERENCE_LOW,
        ratio=rate / REFERENCE_LOW,
    )
    detail = [
        f"HTTP: `wrk {' '.join(WRK_ARGS)}` ({figures['wrk_version']}) against `GET /json` of a bare Litestar app "
        f"on uvicorn (one worker, separate process): {rate:,.0f} req/s, latency avg {figures['latency_avg']}, "
        f"p99 {figures['latency_p99']}, non-2xx {figures['non_2xx']}. The issue quotes "
        f"{REFERENCE_LOW:,.0f}–{REFERENCE_HIGH:,.0f} req/s for this machine."
    ]
    return Section("Bare Litestar", [row], detail)


def main(argv: list[str]) -> int:
    """``serve PORT``."""
    if len(argv) != 2 or argv[0] != "serve":
        print("usage: python -m bench.bare_http serve PORT", file=sys.stderr)
        return 2
    serve(int(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
